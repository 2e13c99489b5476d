"""Tenants at the edges: `policy explain`, `policy check --root`, and a loop that refuses guarantees the fast tier
cannot hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxltierd.cli import main
from cxltierd.engines.base import Engines
from cxltierd.errors import ConfigError
from cxltierd.loop import Loop
from cxltierd.policy.schema import build_policy
from tests.unit.test_loop import TOPO, Fake

REPO = Path(__file__).resolve().parents[2]
POLICY = """
tenants:
  - {name: inference, match: {cgroup: /ai.slice/inference}, fast_min: 1GiB, class: latency}
  - {name: ai, match: {cgroup: /ai.slice}, fast_max: 50%}
"""


def write_policy(tmp_path: Path, text: str) -> str:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    os.chmod(p, 0o644)
    return str(p)


def fake_proc(root: Path, pid: int, name: str, cgroup: str) -> None:
    d = root / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "status").write_text(f"Name:\t{name}\nPid:\t{pid}\nVmRSS:\t  102400 kB\n")
    (d / "cmdline").write_bytes(name.encode() + b"\0--serve\0")
    (d / "cgroup").write_text(f"0::{cgroup}\n")


def test_policy_explain_names_the_tenant_of_each_pid(tmp_path):
    root = tmp_path / "root"
    fake_proc(root, 4242, "serve", "/ai.slice/inference/worker.scope")
    fake_proc(root, 4343, "train", "/ai.slice/train.scope")
    fake_proc(root, 4444, "bash", "/user.slice")
    policy = write_policy(tmp_path, POLICY)
    r = CliRunner().invoke(main, ["policy", "explain", policy, "--root", str(root), "--pid", "4242", "--pid", "4343",
                                  "--pid", "4444"])  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "pid 4242 (serve) in cgroup /ai.slice/inference/worker.scope: tenant inference"
    assert lines[1].startswith("  inference: fast_min 1GiB, fast_max none, weight 1, class latency (chosen)")
    assert lines[2].startswith("  ai: fast_min 0B, fast_max 50%") and "matches too" in lines[2]
    assert "pid 4343 (train) in cgroup /ai.slice/train.scope: tenant ai" in lines
    assert "pid 4444 (bash) in cgroup /user.slice: tenant other" in lines
    gone = CliRunner().invoke(main, ["policy", "explain", policy, "--root", str(root), "--pid", "9"])
    assert gone.exit_code == 2 and gone.output.strip() == f"cxltierd: error: pid 9: no such user process under {root}"


def test_policy_check_root_refuses_guarantees_beyond_the_fast_tier(tmp_path):
    host = str(REPO / "fixtures/hosts/two-socket-cxl")
    ok = CliRunner().invoke(main, ["policy", "check", write_policy(tmp_path, POLICY), "--root", host])
    assert ok.exit_code == 0, ok.output
    big = write_policy(tmp_path, POLICY.replace("fast_min: 1GiB", "fast_min: 100TiB"))
    r = CliRunner().invoke(main, ["policy", "check", big, "--root", host])
    assert r.exit_code == 2
    assert r.output.startswith(f"cxltierd: error: {big}: tenants: guarantees of inference (100TiB) add up to 100TiB,")
    assert CliRunner().invoke(main, ["policy", "check", big]).exit_code == 0  # without a host: only percentages


def test_loop_refuses_a_swap_to_guarantees_beyond_the_fast_tier():
    fake = Fake({0: 5.0})
    lp = Loop(TOPO, Engines("fake", fake, fake), build_policy({}))
    lp.start()
    small = build_policy({"tenants": [{"name": "a", "match": {"pid": 1}, "fast_min": "1GiB"}]})
    lp.swap(policy=small)
    assert lp.policy is small
    big = build_policy({"tenants": [{"name": "a", "match": {"pid": 1}, "fast_min": "3GiB"}]})  # DDR: 2000 MiB
    with pytest.raises(ConfigError, match="guarantees of a \\(3GiB\\) add up to 3GiB, more than the fast tier's"):
        lp.swap(policy=big)
    assert lp.policy is small


def test_a_smaller_topology_is_taken_and_the_guarantees_shrink():
    """Hotplug can shrink the fast tier below the guarantees: the loop takes the new topology (the truth) and the
    decision scales the guarantees down in proportion, instead of refusing the swap."""
    from cxltierd.topology import Node, Tier, Topology

    fake = Fake({0: 5.0})
    pol = build_policy({"tenants": [{"name": "a", "match": {"pid": 1}, "fast_min": "1GiB"}]})
    lp = Loop(TOPO, Engines("fake", fake, fake), pol)
    lp.start()
    small = Topology(
        nodes=(Node(0, "ddr", "t", total_bytes=512 << 20), Node(2, "cxl", "t", total_bytes=4 << 30)),
        tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (2,))),
    )
    lp.swap(topology=small)
    assert lp.topology is small
