"""The three-tier lab guest as a fixture host (fixtures/hosts/qemu-tiers3, captured on 6.12 by
tests/lab/tiers3/test_tiers3_lab.py): HBM-like node 2 by HMAT, a direct and a switched CXL node, classified and
cascaded on evidence alone."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cxltierd.cli import load_host, main
from cxltierd.policy.cascade import applies, cascade_tiers
from cxltierd.policy.schema import build_policy

HOST = Path(__file__).resolve().parents[2] / "fixtures" / "hosts" / "qemu-tiers3"


def test_classified_from_hmat_and_cdat_without_overrides() -> None:
    _, topo = load_host(str(HOST))
    assert {n.node: n.kind for n in topo.nodes} == {0: "ddr", 1: "ddr", 2: "hbm", 4: "cxl", 5: "cxl-far"}
    assert [(t.name, t.nodes) for t in topo.tiers] == [("hbm", (2,)), ("ddr", (0, 1)), ("cxl", (4,)), ("cxl-far", (5,))]
    assert topo.node(2).reason == "CPU-less, HMAT bandwidth 81920 MB/s > 2x DDR's 20480 MB/s"
    assert topo.node(5).reason.endswith("read latency 34330 ns, 2.00x the nearer CXL tier's 17180 ns")
    assert topo.node(4).region == "region0" and topo.node(5).region == "region1"
    assert topo.warnings == ()  # the kernel's memory tiers: 2 -> tier 1, 0-1 -> 4, 4 -> 9924, 5 -> 19802


def test_the_default_policy_cascades_over_all_four_tiers() -> None:
    _, topo = load_host(str(HOST))
    live = set(topo.node_ids)
    assert cascade_tiers(topo, build_policy({}), live) == [(2,), (0, 1), (4,), (5,)]
    assert applies(topo, build_policy({}), live)
    assert not applies(topo, build_policy({"tiers": {"fast": ["ddr"]}}), live)  # named roles keep two


def test_topology_command_shows_four_tiers_fast_to_slow() -> None:
    out = CliRunner().invoke(main, ["topology", "--root", str(HOST)])
    assert out.exit_code == 0, out.output
    tiers = [line.split()[:4] for line in out.stdout.split("Nodes:")[0].splitlines()[1:]]
    assert tiers == [["0", "hbm", "nodes", "2"], ["1", "ddr", "nodes", "0,1"], ["2", "cxl", "nodes", "4"],
                     ["3", "cxl-far", "nodes", "5"]]  # fmt: skip
    doc = json.loads(CliRunner().invoke(main, ["topology", "--root", str(HOST), "--json"]).stdout)
    regions = {r["region"]: r for r in doc["cxl"]["regions"]}
    assert set(regions) == {"region0", "region1"}
    assert doc["kernel"]["memory_tiers"] == {
        "memory_tier1": [2],
        "memory_tier4": [0, 1],
        "memory_tier9924": [4],
        "memory_tier19802": [5],
    }
