"""State snapshot: what the loop publishes after each tick, and what metrics, `status` and the control socket read.

The daemon builds a new immutable Snapshot after every tick (and after a reload or a topology change) and swaps
it in with one assignment; readers (a Prometheus scrape, a control-socket request) only ever read the current
reference, so they never block the loop and never see a half-written state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxltierd.facts import HostFacts
from cxltierd.failover import RasView
from cxltierd.model import Gates
from cxltierd.policy.tenant_usage import TenantUsage
from cxltierd.topology import Topology

# Upper bounds (seconds) of the loop-duration histogram buckets.
TICK_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ReloadResult:
    """The outcome of the last policy reload: whether it took, when, the error if not, and the policy file."""

    ok: bool
    time: float  # wall clock, seconds since the epoch
    error: str | None = None
    source: str = ""


@dataclass(frozen=True)
class SelfUsage:
    """The daemon's own resource use (psutil): what it costs the host."""

    cpu_seconds: float  # user + system CPU time since start
    rss_bytes: int
    threads: int
    open_fds: int


@dataclass(frozen=True)
class Snapshot:
    """The daemon's live state. Counters are cumulative since start."""

    topology: Topology
    version: str = ""
    started: float = 0.0  # wall clock
    backend: str = "emulated"  # "emulated" or "host"
    engine: str = "none"
    engine_reason: str = ""
    engine_uses: tuple[str, ...] = ()  # kernel features the engine drives
    conflicts: tuple[str, ...] = ()  # another kdamond running, numa_balancing set by someone else, ...
    interval: float = 5.0
    policy_source: str = "<defaults>"
    policy_digest: str = ""
    dry_run: bool = False
    last_reload: ReloadResult | None = None
    reloads: dict[str, int] = field(default_factory=dict)  # result ("success"|"failure") -> count
    policy_loaded: float | None = None  # wall clock the policy in force was loaded (start or last good reload)
    planned_bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # dry run: (from, to) tier -> bytes
    planned_moves: dict[tuple[str, str], int] = field(default_factory=dict)  # dry run: (from, to) tier -> moves
    last_tick: float | None = None  # wall clock of the last finished tick
    ticks: int = 0
    tick_seconds_sum: float = 0.0
    tick_bucket_counts: tuple[int, ...] = ()  # cumulative counts per TICK_BUCKETS bound (same length)
    usage: dict[int, tuple[int, int]] = field(default_factory=dict)  # node -> (total, free) bytes, live
    available: dict[int, int] = field(default_factory=dict)  # node -> bytes the kernel can hand out cheaply (room)
    migrated_bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # (from_tier, to_tier) -> bytes
    migrated_pages: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> pages
    ping_pong: int = 0
    fast_tier_access_ratio: float | None = None
    hot_bytes: dict[str, int] = field(default_factory=dict)  # tier -> bytes judged hot
    regions: int = 0  # regions (tracker chunks) with heat at the last tick
    region_bytes: int = 0  # the largest of them
    process_bytes: dict[tuple[int, str, str], int] = field(default_factory=dict)  # only with metrics.process_labels
    last_moved_bytes: int = 0
    topology_changes: int = 0
    kernel_counters: dict[str, int] = field(default_factory=dict)  # /proc/vmstat name -> value
    facts: HostFacts | None = None  # what discovery found (memdevs, regions, dax) when the topology was made
    gates: Gates | None = None  # a kernel-executed engine's promotion/demotion switches at the last tick
    self_usage: SelfUsage | None = None
    last_error: str | None = None
    ras: RasView | None = None  # CXL RAS: health per memdev and node, events, drains
    tenants: dict[str, TenantUsage] = field(default_factory=dict)  # the last tick's, policy.tenants + "other"
    tenant_moves: dict[str, int] = field(default_factory=dict)  # tenant -> regions moved since start
    tenant_numa: dict[str, dict[int, int]] = field(default_factory=dict)  # tenant -> node -> bytes (numa_stat)

    def node_usage(self, node: int) -> tuple[int, int]:
        """(total, free) bytes of a node: live figures from the engine, else the topology's."""
        if node in self.usage:
            return self.usage[node]
        n = self.topology.node(node)
        return n.total_bytes, n.free_bytes

    def tier_usage(self) -> dict[str, tuple[int, int]]:
        """(total, free) bytes per tier name, summed over its nodes' node_usage()."""
        out = {}
        for t in self.topology.tiers:
            pairs = [self.node_usage(n) for n in t.nodes]
            out[t.name] = (sum(p[0] for p in pairs), sum(p[1] for p in pairs))
        return out
