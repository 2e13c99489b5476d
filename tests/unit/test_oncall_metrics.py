"""Metrics an on-call engineer reads: failure reasons from the start, the policy in force and when it was loaded,
and what a dry run would have moved. Read through prometheus_client's registry, as a scrape would."""

from __future__ import annotations

import time

import pytest

from cxltierd.app import Settings, build
from cxltierd.model import FAILURE_REASONS
from cxltierd.service.daemon import Daemon, FakeClock, Options
from cxltierd.service.metrics import registry_for
from cxltierd.service.publish import ServiceState
from cxltierd.service.state import ReloadResult, Snapshot
from cxltierd.topology import Node, Tier, Topology

TOPO = Topology(nodes=(Node(0, "ddr", "t"),), tiers=(Tier("ddr", 0, (0,)),))


def test_every_failure_reason_is_exported_at_zero_from_the_start():
    reg = registry_for(lambda: Snapshot(topology=TOPO))
    for reason in FAILURE_REASONS:
        assert reg.get_sample_value("cxltierd_migration_failures_total", {"reason": reason}) == 0, reason
    counted = registry_for(lambda: Snapshot(topology=TOPO, failures={"busy": 7, "odd": 1}))
    assert counted.get_sample_value("cxltierd_migration_failures_total", {"reason": "busy"}) == 7
    assert counted.get_sample_value("cxltierd_migration_failures_total", {"reason": "target_full"}) == 0
    assert counted.get_sample_value("cxltierd_migration_failures_total", {"reason": "odd"}) == 1


def test_policy_hash_and_load_time_follow_good_reloads_only():
    svc = ServiceState(backend="emulated", started=100.0)
    assert svc.policy_loaded == 100.0  # the start's policy
    svc.record_reload(ReloadResult(ok=True, time=200.0))
    svc.record_reload(ReloadResult(ok=False, time=300.0, error="bad"))
    assert svc.policy_loaded == 200.0 and svc.reloads == {"success": 1, "failure": 1}
    assert svc.last_reload is not None and not svc.last_reload.ok
    snap = Snapshot(topology=TOPO, policy_source="/etc/p.yaml", policy_digest="ab12", policy_loaded=200.0)
    reg = registry_for(lambda: snap)
    assert reg.get_sample_value("cxltierd_policy_info", {"source": "/etc/p.yaml", "sha256": "ab12"}) == 1
    assert reg.get_sample_value("cxltierd_policy_last_reload_success_timestamp_seconds") == 200.0


def run_daemon(tmp_path, dry_run: bool) -> Daemon:
    rt, loop = build(Settings(backend="emulated", seed=3, dry_run=dry_run, state_dir=str(tmp_path)))
    d = Daemon(rt, loop, Options(ticks=12), clock=FakeClock())
    assert d.run() == 0
    return d


def test_a_dry_run_counts_what_it_planned_and_moves_nothing(tmp_path):
    started = time.time()
    d = run_daemon(tmp_path / "dry", dry_run=True)
    reg = registry_for(lambda: d.snapshot)
    assert reg.get_sample_value("cxltierd_dry_run") == 1
    planned = {
        s.labels["from_tier"] + "->" + s.labels["to_tier"]: s.value
        for f in reg.collect()
        for s in f.samples
        if s.name == "cxltierd_dry_run_planned_bytes_total"
    }
    assert planned and all(v > 0 for v in planned.values()), planned
    moves = reg.get_sample_value("cxltierd_dry_run_planned_moves_total", {"from_tier": "cxl", "to_tier": "ddr"})
    assert moves is not None and moves >= 1
    assert sum(d.snapshot.migrated_bytes.values()) == 0  # type: ignore[union-attr]
    loaded = reg.get_sample_value("cxltierd_policy_last_reload_success_timestamp_seconds")
    assert loaded == pytest.approx(started, abs=60)
    assert reg.get_sample_value("cxltierd_policy_info", {"source": "<defaults>", "sha256": d.loop.policy.digest}) == 1
    live = run_daemon(tmp_path / "live", dry_run=False)
    live_reg = registry_for(lambda: live.snapshot)
    assert sum(live.snapshot.migrated_bytes.values()) > 0  # type: ignore[union-attr]
    assert not [s for f in live_reg.collect() for s in f.samples if s.name.startswith("cxltierd_dry_run_planned")]
