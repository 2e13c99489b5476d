"""What the daemon publishes after a tick: the Snapshot (metrics, `status`), the tick's log line, the systemd
STATUS= line, and the tick-duration histogram. Pure functions of the loop's state and the daemon's counters."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from cxltierd import __version__
from cxltierd.loop import Loop, TickReport
from cxltierd.service.state import TICK_BUCKETS, ReloadResult, SelfUsage, Snapshot
from cxltierd.units import human_bytes


@dataclass
class TickTimes:
    """Cumulative histogram of tick durations (seconds), in the buckets of TICK_BUCKETS."""

    counts: list[int] = field(default_factory=lambda: [0] * len(TICK_BUCKETS))
    total: float = 0.0

    def add(self, seconds: float) -> None:
        """Count one tick of `seconds`."""
        self.total += seconds
        for j in range(bisect_left(TICK_BUCKETS, seconds), len(TICK_BUCKETS)):
            self.counts[j] += 1


@dataclass
class ServiceState:
    """The daemon's own counters that go into every snapshot."""

    backend: str
    started: float  # wall clock
    times: TickTimes = field(default_factory=TickTimes)
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    last_reload: ReloadResult | None = None
    last_tick_wall: float | None = None
    topology_changes: int = 0
    last_error: str | None = None
    policy_loaded: float | None = None  # wall clock of the start's policy load or the last good reload
    planned_bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # dry-run plans, per tier pair
    planned_moves: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy_loaded is None:
            self.policy_loaded = self.started  # the policy in force was loaded at start

    def record_reload(self, result: ReloadResult) -> None:
        """Count a reload by result; a good one is when the policy in force was loaded."""
        self.reloads["success" if result.ok else "failure"] += 1
        if result.ok:
            self.policy_loaded = result.time
        self.last_reload = result

    def record_plan(self, tier_name: Callable[[int], str], r: TickReport) -> None:
        """Count a dry-run tick's planned moves and bytes per (from, to) tier; other ticks move, not plan."""
        if not r.dry_run:
            return
        for m in r.plan.moves:
            pair = (tier_name(m.src), tier_name(m.dst))
            self.planned_bytes[pair] = self.planned_bytes.get(pair, 0) + m.size
            self.planned_moves[pair] = self.planned_moves.get(pair, 0) + 1


def self_usage() -> SelfUsage | None:
    """This process's CPU time, RSS, threads and descriptors (None where psutil cannot read them)."""
    try:
        me = psutil.Process()
        with me.oneshot():
            cpu = me.cpu_times()
            return SelfUsage(cpu.user + cpu.system, me.memory_info().rss, me.num_threads(), me.num_fds())
    except (psutil.Error, OSError):
        return None


def snapshot(
    loop: Loop,
    svc: ServiceState,
    counters: dict[str, int],
    usage: SelfUsage | None = None,
    tenant_numa: dict[str, dict[int, int]] | None = None,
) -> Snapshot:
    """The immutable state readers see, from the loop's live state, its last tick and the daemon's counters
    (tenant_numa: each tenant's memory per node from its cgroup's memory.numa_stat)."""
    last, t, e, pol = loop.last, loop.totals, loop.engines, loop.policy
    return Snapshot(
        topology=loop.topology,
        version=__version__,
        started=svc.started,
        backend=svc.backend,
        engine=e.name,
        engine_reason=e.reason,
        engine_uses=e.uses + tuple(getattr(e.migrator, "live_uses", tuple)()),  # damos: cgroups covered now
        conflicts=e.conflicts,
        interval=pol.interval,
        policy_source=pol.source,
        policy_digest=pol.digest,
        dry_run=pol.dry_run,
        last_reload=svc.last_reload,
        reloads=dict(svc.reloads),
        policy_loaded=svc.policy_loaded,
        planned_bytes=dict(svc.planned_bytes),
        planned_moves=dict(svc.planned_moves),
        last_tick=svc.last_tick_wall,
        ticks=t.ticks,
        tick_seconds_sum=svc.times.total,
        tick_bucket_counts=tuple(svc.times.counts),
        usage=dict(last.usage) if last else {},
        available=dict(last.available) if last else {},
        migrated_bytes=dict(t.migrated_bytes),
        migrated_pages=dict(t.migrated_pages),
        failures=dict(t.failures),
        ping_pong=t.ping_pong,
        fast_tier_access_ratio=last.fast_share if last else None,
        hot_bytes=dict(last.hot_bytes) if last else {},
        regions=last.regions if last else 0,
        region_bytes=last.region_bytes if last else 0,
        process_bytes=dict(last.process_bytes) if last else {},
        last_moved_bytes=last.moved_bytes if last else 0,
        topology_changes=svc.topology_changes,
        kernel_counters=counters,
        facts=loop.facts,
        gates=last.gates if last else None,
        self_usage=usage,
        last_error=svc.last_error,
        tenants=dict(last.tenants) if last else {},
        tenant_moves=dict(t.tenant_moves),
        tenant_numa=dict(tenant_numa or {}),
    )


def tick_line(loop: Loop, r: TickReport) -> str:
    """The log line of one tick: what moved between which tiers, the fast-tier share, usage per tier."""
    per_pair: dict[tuple[str, str], int] = {}
    for tr in r.outcome.transfers:
        pair = (loop.tier_name(tr.src), loop.tier_name(tr.dst))
        per_pair[pair] = per_pair.get(pair, 0) + tr.bytes
    moves = ", ".join(f"{a}->{b} {human_bytes(v)}" for (a, b), v in sorted(per_pair.items()))
    if r.dry_run:
        planned = sum(m.size for m in r.plan.moves)
        moved = f"dry run: {len(r.plan.moves)} moves planned ({human_bytes(planned)})"
    else:
        moved = f"moved {human_bytes(r.moved_bytes)}" + (f" ({moves})" if moves else "")
    share = "n/a" if r.fast_share is None else f"{100 * r.fast_share:.1f}%"
    usage = []
    for t in loop.topology.tiers:
        pairs = [r.usage[n] for n in t.nodes if n in r.usage]
        if pairs:
            total = sum(p[0] for p in pairs)
            used = total - sum(p[1] for p in pairs)
            usage.append(f"{t.name} {human_bytes(used)}/{human_bytes(total)}")
    failed = sum(r.outcome.failures.values())
    return f"tick {loop.totals.ticks}: {moved}, fast-tier share {share}, used {', '.join(usage) or 'n/a'}" + (
        f", {failed} pages failed" if failed else ""
    )


def status_line(s: Snapshot | None) -> str:
    """The STATUS= line for systemd: "starting" before the first snapshot."""
    if s is None:
        return "starting"
    share = "" if s.fast_tier_access_ratio is None else f", fast-tier share {100 * s.fast_tier_access_ratio:.0f}%"
    moved = sum(s.migrated_bytes.values())
    return f"{s.engine} engine on {s.backend} host: {len(s.topology.tiers)} tiers, moved {human_bytes(moved)}{share}"
