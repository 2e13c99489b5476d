"""The three-tier lab guest as fixture hosts (fixtures/hosts/qemu-tiers3 from 6.12, qemu-tiers3-7.3 from 7.3, both
captured by tests/lab/tiers3/test_tiers3_lab.py): HBM-like node 2 by HMAT, a direct and a switched CXL node,
classified and cascaded on evidence alone. The kernels differ in the CXL figures only (6.12 counts about 17000 ns
more per link and shows them under the nodes too; 7.3 only under the regions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxltierd.cli import load_host, main
from cxltierd.policy.cascade import applies, cascade_tiers
from cxltierd.policy.schema import build_policy

HOSTS = Path(__file__).resolve().parents[2] / "fixtures" / "hosts"
# fixture: (CXL read latency near, far in ns; the kernel's memory tiers of nodes 4 and 5)
KERNELS = {"qemu-tiers3": ((17180, 34330), (9924, 19802)), "qemu-tiers3-7.3": ((182, 334), (133, 221))}


@pytest.fixture(params=sorted(KERNELS))
def host(request: pytest.FixtureRequest) -> tuple[Path, tuple[int, int], tuple[int, int]]:
    latency, tiers = KERNELS[request.param]
    return HOSTS / request.param, latency, tiers


def test_classified_from_hmat_and_cdat_without_overrides(host: tuple[Path, tuple[int, int], tuple[int, int]]) -> None:
    root, (near, far), _ = host
    _, topo = load_host(str(root))
    assert {n.node: n.kind for n in topo.nodes} == {0: "ddr", 1: "ddr", 2: "hbm", 4: "cxl", 5: "cxl-far"}
    assert [(t.name, t.nodes) for t in topo.tiers] == [("hbm", (2,)), ("ddr", (0, 1)), ("cxl", (4,)), ("cxl-far", (5,))]
    assert topo.node(2).reason == "CPU-less, HMAT bandwidth 81920 MB/s > 2x DDR's 20480 MB/s"
    assert topo.node(5).reason.endswith(f"read latency {far} ns, {far / near:.2f}x the nearer CXL tier's {near} ns")
    assert far / near >= 1.25  # CXL_FAR_FACTOR
    assert topo.node(4).region == "region0" and topo.node(5).region == "region1"
    assert topo.warnings == ()  # agrees with the kernel's memory tiers


def test_the_default_policy_cascades_over_all_four_tiers(host: tuple[Path, tuple[int, int], tuple[int, int]]) -> None:
    _, topo = load_host(str(host[0]))
    live = set(topo.node_ids)
    assert cascade_tiers(topo, build_policy({}), live) == [(2,), (0, 1), (4,), (5,)]
    assert applies(topo, build_policy({}), live)
    assert not applies(topo, build_policy({"tiers": {"fast": ["ddr"]}}), live)  # named roles keep two


def test_topology_command_shows_four_tiers_fast_to_slow(host: tuple[Path, tuple[int, int], tuple[int, int]]) -> None:
    root, _, (near_tier, far_tier) = host
    out = CliRunner().invoke(main, ["topology", "--root", str(root)])
    assert out.exit_code == 0, out.output
    tiers = [line.split()[:4] for line in out.stdout.split("Nodes:")[0].splitlines()[1:]]
    assert tiers == [["0", "hbm", "nodes", "2"], ["1", "ddr", "nodes", "0,1"], ["2", "cxl", "nodes", "4"],
                     ["3", "cxl-far", "nodes", "5"]]  # fmt: skip
    doc = json.loads(CliRunner().invoke(main, ["topology", "--root", str(root), "--json"]).stdout)
    regions = {r["region"]: r for r in doc["cxl"]["regions"]}
    assert set(regions) == {"region0", "region1"}
    assert doc["kernel"]["memory_tiers"] == {
        "memory_tier1": [2],
        "memory_tier4": [0, 1],
        f"memory_tier{near_tier}": [4],
        f"memory_tier{far_tier}": [5],
    }
    assert doc["kernel"]["memory_tiers_consistent"] is True
