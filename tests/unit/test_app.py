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
    rt, loop = build(Settings(backend="host", root=str(HOSTS / "single-node"), state_dir=str(tmp_path)))
    assert loop.engines.name == "none" and loop.engines.reason.startswith("one memory tier (ddr)")
    sample = loop.engines.tracker.sample(1.0)
    assert sample.regions == () and set(sample.free_bytes) == {0}
    facts = rt.discover()
    assert rt.engines_for(facts, rt.classify(facts, loop.policy), loop.policy).name == "none"  # still one tier
    rt.close()


def test_idle_host_picks_a_real_engine_when_a_cxl_node_appears(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    rt, loop = build(Settings(backend="host", root=str(root), state_dir=str(tmp_path / "state")))
    assert loop.engines.name == "damos"  # kernel 6.12 fixture with DAMON sysfs free
    loop.stop()
    # the same host seen with its CXL node gone, then back
    from cxltierd.emulate.tree import add_node, remove_node

    remove_node(root, 2)
    rt, loop = build(Settings(backend="host", root=str(root), state_dir=str(tmp_path / "state")))
    assert loop.engines.name == "none"
    add_node(root, 2)
    facts = rt.discover()
    topo = rt.classify(facts, loop.policy)
    engines = rt.engines_for(facts, topo, loop.policy)
    assert engines.name == "damos" and engines.tracker is engines.migrator
    loop.swap(facts=facts, topology=topo, engines=engines)
    assert loop.engines is engines and loop.topology is topo and 2 in loop.topology.node_ids
    loop.stop()


def test_auto_backend_emulates_a_one_tier_host_and_uses_a_real_multi_tier_one(tmp_path):
    one, loop = build(Settings(backend="auto", root=str(HOSTS / "single-node"), state_dir=str(tmp_path)))
    assert one.backend == "emulated" and loop.engines.name == "simulated"
    one.close()
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    two, loop = build(Settings(backend="auto", root=str(root), state_dir=str(tmp_path / "state")))
    assert two.backend == "host" and loop.engines.name == "damos"
    loop.stop()


def test_scripted_hotplug_reaches_the_daemon_as_an_event_source(tmp_path):
    """The emulated host's scripted hotplug wakes select() through a pipe, like udev, and changes the tree copy."""
    import select

    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: s\nhost: default\nduration: 20\ninterval: 1\nnodes: {0: 64MiB, 1: 64MiB, 2: 256MiB}\n"
        "processes: [{name: app, pid: 100, size: 8MiB, phases: [{pattern: uniform, rate: 10}]}]\n"
        "events: [{at: 2, remove_node: 2}]\n"
    )
    rt, loop = build(Settings(backend="emulated", scenario=str(scenario), seed=1))
    (source,) = rt.events
    assert select.select([source.fileno()], [], [], 0)[0] == []
    loop.tick(0.0)
    loop.tick(3.0)  # the simulator passes the scripted removal
    assert select.select([source.fileno()], [], [], 0)[0] == [source.fileno()]
    events = source.drain()
    assert any("node2" in e for e in events) and not rt.fs.exists("/sys/devices/system/node/node2")
    assert select.select([source.fileno()], [], [], 0)[0] == []  # drained
    facts = rt.discover()
    assert 2 not in {n.node for n in facts.nodes}
    rt.close()


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
    rt, loop = build(Settings(backend="host", root=str(root), state_dir=str(state)))
    e = loop.engines
    assert e.name == "damos" and "DAMON_STAT turned off" in e.reason and e.conflicts == ()
    assert param.read_text() == "N" and (state / "damon_stat.json").exists()
    rt.close()
    assert param.read_text() == "Y" and not (state / "damon_stat.json").exists()
    policy = tmp_path / "policy.yaml"
    policy.write_text("damon:\n  take_over_damon_stat: false\n")
    rt, loop = build(Settings(backend="host", root=str(root), state_dir=str(state), config=str(policy)))
    e = loop.engines
    assert e.name == "numa_balancing" and "damon.take_over_damon_stat is false" in e.reason
    assert param.read_text().strip() == "Y"
    rt.close()
    assert param.read_text().strip() == "Y"


def test_doctor_shows_whether_damon_stat_runs(tmp_path):
    from cxltierd.report.doctor import run_checks

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


def test_the_engine_is_built_with_what_the_kernel_said_it_accepts(tmp_path, monkeypatch):
    """The DAMON probe's findings reach the DAMOS engine (its goals, refresh_ms) and `status` (its uses)."""
    from cxltierd.engines import registry
    from cxltierd.engines.damon_probe import DamonFeatures

    said = DamonFeatures(
        True,
        actions=("migrate_hot", "migrate_cold", "stat"),
        filters=("anon", "memcg", "young", "addr"),
        goal_metrics=("user_input",),
        refresh_ms=True,
    )
    monkeypatch.setattr(registry, "probe", lambda fs: said)
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    rt, loop = build(Settings(backend="host", root=str(root), state_dir=str(tmp_path / "state")))
    e = loop.engines
    assert e.name == "damos" and e.migrator.features is said  # type: ignore[attr-defined]
    assert "goal:user_input" in e.uses
    monkeypatch.setattr(registry, "probe", lambda fs: DamonFeatures(True, actions=("migrate_hot",)))
    _, loop = build(Settings(backend="host", root=str(root), state_dir=str(tmp_path / "state")))
    assert loop.engines.name == "move_pages"  # the kernel refused migrate_cold: DAMOS cannot run
    rt.close()


def test_the_host_runtime_sets_interleave_weights_and_gives_them_back(tmp_path):
    """interleave.weights: bandwidth on a host (two-socket-cxl: DDR 150000 MB/s, CXL 30000 MB/s) writes 16:16:3 (32:32:6.4 rounded, halved) at
    build, and closing the runtime writes the old weights back."""
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    wi = root / "sys/kernel/mm/mempolicy/weighted_interleave"
    wi.mkdir(parents=True)
    for n in (0, 1, 2):
        (wi / f"node{n}").write_text("1\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("interleave: {weights: bandwidth}\n")
    state = tmp_path / "state"
    rt, _ = build(Settings(backend="host", root=str(root), state_dir=str(state), config=str(policy)))
    assert [(wi / f"node{n}").read_text() for n in (0, 1, 2)] == ["16", "16", "3"]
    assert (state / "interleave.json").exists()
    rt.close()
    assert [(wi / f"node{n}").read_text().strip() for n in (0, 1, 2)] == ["1", "1", "1"]
    assert not (state / "interleave.json").exists()
