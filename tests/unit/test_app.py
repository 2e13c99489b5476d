"""Wiring: backend resolution, the idle engine on one-tier hosts, and the switch when a second tier appears."""

from __future__ import annotations

import shutil
from pathlib import Path

from cxltierd.app import Settings, build

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
