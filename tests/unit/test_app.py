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
