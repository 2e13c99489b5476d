"""Per-tenant accounting of one tick (pure): managed bytes and hot bytes per tier, guarantee, cap and shortfall.

Bounded by the policy: one row per configured tenant plus `other`, never one per process. The shortfall is what a
tenant's guarantee still misses on the fast tier: min(fast_min, its hot bytes) minus its hot bytes on the fast tier
(a guarantee covers hot memory: cold pages on the fast tier do not count toward it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cxltierd.model import Move, Process, RegionHeat
from cxltierd.policy.roles import fast_capacity, roles
from cxltierd.policy.schema import Policy
from cxltierd.policy.tenants import OTHER, budgets, tenant_of
from cxltierd.topology import Topology


@dataclass(frozen=True)
class TenantUsage:
    """One tenant at one tick, as the tracker sees its managed memory."""

    name: str
    klass: str
    weight: float
    guarantee: int  # fast_min in bytes
    cap: int  # fast_max in bytes (the fast tier's capacity when uncapped)
    bytes: Mapping[str, int] = field(default_factory=dict)  # tier -> managed bytes
    hot: Mapping[str, int] = field(default_factory=dict)  # tier -> bytes at or above the hot threshold
    fast_bytes: int = 0
    shortfall: int = 0
    moves: int = 0  # planned moves of this tick


def tenant_usage(
    topology: Topology,
    policy: Policy,
    regions: Sequence[RegionHeat],
    processes: Mapping[int, Process],
    moves: Sequence[Move] = (),
) -> dict[str, TenantUsage]:
    """Every tenant of the policy and `other` (empty without tenants), from the tick's smoothed regions."""
    if not policy.tenants:
        return {}
    fast = set(roles(topology, policy).fast)
    tier = {n: t.name for t in topology.tiers for n in t.nodes}
    names: dict[int, str] = {}

    def who(pid: int) -> str:
        if pid not in names:
            names[pid] = tenant_of(policy.tenants, processes.get(pid))
        return names[pid]

    size: dict[str, Counter[str]] = {}
    hot: dict[str, Counter[str]] = {}
    fast_bytes: Counter[str] = Counter()
    hot_total: Counter[str] = Counter()
    hot_fast: Counter[str] = Counter()
    threshold = policy.hotness.hot_threshold
    for r in regions:
        t, where = who(r.pid), tier.get(r.node, "unknown")
        size.setdefault(t, Counter())[where] += r.size
        if r.node in fast:
            fast_bytes[t] += r.size
        if r.accesses >= threshold:
            hot.setdefault(t, Counter())[where] += r.size
            hot_total[t] += r.size
            hot_fast[t] += r.size if r.node in fast else 0
    moved = Counter(who(m.pid) for m in moves)
    out = {}
    for name, b in budgets(policy.tenants, fast_capacity(topology, policy)).items():
        out[name] = TenantUsage(
            name=name,
            klass=b.klass,
            weight=b.weight,
            guarantee=b.fast_min,
            cap=b.fast_max,
            bytes=dict(size.get(name, {})),
            hot=dict(hot.get(name, {})),
            fast_bytes=fast_bytes[name],
            shortfall=max(0, min(b.fast_min, hot_total[name]) - hot_fast[name]),
            moves=moved[name],
        )
    return {k: out[k] for k in (*(t.name for t in policy.tenants), OTHER)}
