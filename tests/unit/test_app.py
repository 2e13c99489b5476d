"""Wiring: backend resolution, the idle engine on one-tier hosts, and the switch when a second tier appears."""

from __future__ import annotations

import shutil
from pathlib import Path

from cxltierd.app import Settings, build
from cxltierd.discovery import discover
from cxltierd.hostfs import HostFS
from cxltierd.topology import classify

HOSTS = Path(__file__).resolve().parents[2] / "fixtures" / "hosts"


def test_host_backend_on_a_one_tier_host_runs_idle(tmp_path):
    rt = build(Settings(backend="host", root=str(HOSTS / "single-node"), state_dir=str(tmp_path)))
    assert rt.engine == "none" and rt.engine_reason.startswith("one memory tier (ddr)")
    sample = rt.tracker.sample(1.0)
    assert sample.regions == () and set(sample.free_bytes) == {0}
    assert not rt.pick_engine()  # still one tier


def test_idle_host_picks_a_real_engine_when_a_cxl_node_appears(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    rt = build(Settings(backend="host", root=str(root), state_dir=str(tmp_path / "state")))
    assert rt.engine == "damos"  # kernel 6.12 fixture with DAMON sysfs free
    rt.close()
    # the same host seen with its CXL node gone, then back
    from cxltierd.emulate.tree import add_node, remove_node

    remove_node(root, 2)
    rt = build(Settings(backend="host", root=str(root), state_dir=str(tmp_path / "state")))
    assert rt.engine == "none"
    add_node(root, 2)
    rt.facts = discover(HostFS(root))
    rt.topology = classify(rt.facts)
    assert rt.pick_engine() and rt.engine == "damos" and rt.tracker is rt.migrator


def test_auto_backend_emulates_a_one_tier_host_and_uses_a_real_multi_tier_one(tmp_path):
    one = build(Settings(backend="auto", root=str(HOSTS / "single-node"), state_dir=str(tmp_path)))
    assert one.backend == "emulated" and one.engine == "simulated"
    one.close()
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    two = build(Settings(backend="auto", root=str(root), state_dir=str(tmp_path / "state")))
    assert two.backend == "host" and two.engine == "damos"


def test_a_damon_engine_takes_damon_stat_over_and_gives_it_back(tmp_path):
    """7.3 runs the kernel's DAMON_STAT kdamond by default, and no sysfs kdamond starts beside it: the DAMON engine
    turns it off (recorded in the state dir), says so in its reason, and the runtime turns it back on at close. With
    damon.take_over_damon_stat false it is left alone and auto falls back to the NUMA-balancing engine."""
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    param = root / "sys/module/damon_stat/parameters/enabled"
    param.parent.mkdir(parents=True)
    param.write_text("Y\n")
    state = tmp_path / "state"
    rt = build(Settings(backend="host", root=str(root), state_dir=str(state)))
    assert rt.engine == "damos" and "DAMON_STAT turned off" in rt.engine_reason and rt.conflicts == []
    assert param.read_text() == "N" and (state / "damon_stat.json").exists()
    rt.close()
    assert param.read_text() == "Y" and not (state / "damon_stat.json").exists()
    policy = tmp_path / "policy.yaml"
    policy.write_text("damon:\n  take_over_damon_stat: false\n")
    rt = build(Settings(backend="host", root=str(root), state_dir=str(state), config=str(policy)))
    assert rt.engine == "numa_balancing" and "damon.take_over_damon_stat is false" in rt.engine_reason
    assert param.read_text().strip() == "Y"
    rt.close()
    assert param.read_text().strip() == "Y"


def test_doctor_shows_whether_damon_stat_runs(tmp_path):
    from cxltierd.doctor import run_checks

    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    facts = discover(HostFS(root))
    assert facts.kernel.damon.stat is None and "damon_stat" not in {
        c.name for c in run_checks(facts, classify(facts), 0)
    }
    param = root / "sys/module/damon_stat/parameters/enabled"
    param.parent.mkdir(parents=True)
    for value, expect in (("Y", "kdamond runs (not a sysfs kdamond)"), ("N", "present, not running")):
        param.write_text(value + "\n")
        facts = discover(HostFS(root))
        assert facts.kernel.damon.stat is (value == "Y") and facts.kernel.damon.running == ()
        (check,) = [c for c in run_checks(facts, classify(facts), 0) if c.name == "damon_stat"]
        assert check.status == "ok" and expect in check.message
