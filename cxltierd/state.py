"""State snapshot: what the loop publishes after each tick, and what metrics, `status` and the control socket read.

The loop builds a new immutable Snapshot at the end of every tick (and after a reload or a topology change) and
swaps it in with one assignment; readers (a Prometheus scrape, a control-socket request) only ever read the
current reference, so they never block the loop and never see a half-written state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cxltierd.topology import Topology

# Upper bounds (seconds) of the loop-duration histogram buckets.
TICK_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    time: float  # wall clock, seconds since the epoch
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The daemon's live state after a tick. Counters are cumulative since start."""

    topology: Topology
    engine: str = "none"
    engine_reason: str = ""
    backend: str = "emulated"  # "emulated" or "host"
    policy_source: str = "<defaults>"
    policy_hash: str = ""
    dry_run: bool = False
    last_reload: ReloadResult | None = None
    reloads: dict[str, int] = field(default_factory=dict)  # result ("success"|"failure") -> count
    last_tick: float | None = None  # wall clock of the last finished tick
    ticks: int = 0
    tick_seconds_sum: float = 0.0
    tick_bucket_counts: tuple[int, ...] = ()  # cumulative counts per TICK_BUCKETS bound (same length)
    migrated_bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # (from_tier, to_tier) -> bytes
    migrated_pages: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    fast_tier_access_ratio: float | None = None
    hot_bytes: dict[str, int] = field(default_factory=dict)  # tier -> bytes judged hot
    topology_changes: int = 0
    kernel_counters: dict[str, int] = field(default_factory=dict)  # /proc/vmstat name -> value
    memdevs: tuple[dict[str, Any], ...] = ()  # `cxl list`-style dicts: memdev, serial, host, firmware_version, ...
    regions: tuple[dict[str, Any], ...] = ()  # region, mode, size, target_node, ...
    last_error: str | None = None
