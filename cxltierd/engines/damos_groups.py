"""Which memory the DAMOS engine's migrate schemes cover, and how tenants shape them (pure).

A DAMON memcg filter matches one cgroup exactly (not its descendants), and on 6.12 several memcg filters of one
scheme all apply (a page is in one memcg, so two "only this cgroup" filters leave nothing). So every covered cgroup
gets schemes of its own: the cgroups named by `processes.manage` cgroup selectors and every cgroup below them,
found by the caller (discovery/cgroups.py), at most MAX_MEMCGS of them, the first found first; the rest are not
covered (the engine says so in a log line and in `status`). Without a cgroup selector the schemes cover all
memory, except that tenants' cgroups get schemes of their own (the all-memory group excludes them), so their
weights and goals apply.

Tenants (policy/tenants.py), matched to a cgroup by the longest cgroup prefix, as tenant_of() matches processes:
- every kernel: the promotion quota is split between the groups in proportion to their tenant's weight (the
  cgroups of one tenant share its part equally; cgroups of no tenant belong to `other`, weight 1);
- where the kernel has the node_memcg_used_bp quota goal (6.19): each tenant with a guarantee gets promotion schemes
  restricted to its cgroups whose quota the kernel tunes until the tenant's memory on the fast node reaches the
  guarantee (node_memcg_used_bp, in basis points of the node); with a cap and node_memcg_free_bp, demotion schemes
  whose quota the kernel tunes until the tenant's memory there is back under the cap. Elsewhere only the weighted
  quotas apply (guarantee and cap are not enforced by the kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cxltierd.policy.tenants import OTHER, Tenant, budgets

MAX_MEMCGS = 16  # covered cgroups: each costs a promotion scheme per slow node (and DAMON time per region)
GOAL_USED = "node_memcg_used_bp"
GOAL_FREE = "node_memcg_free_bp"


@dataclass(frozen=True)
class Group:
    """The memory one set of migrate schemes covers: one cgroup (exactly), or all memory but some cgroups."""

    memcg: str | None  # None: all memory
    tenant: str = OTHER
    share: float = 1.0  # fraction of the promotion quota
    exclude: tuple[str, ...] = ()  # cgroups left out of an all-memory group (they have groups of their own)


@dataclass(frozen=True)
class TenantGoal:
    """A tenant's guarantee (and cap) as kernel quota goals on the fast node."""

    tenant: str
    path: str  # the tenant's cgroup: the goal counts its memory, descendants included
    memcgs: tuple[str, ...]  # its covered cgroups: one promotion (and demotion) scheme each
    used_bp: int  # guarantee: node_memcg_used_bp target
    free_bp: int | None = None  # cap: node_memcg_free_bp target (10000 - cap), None without a cap


@dataclass(frozen=True)
class Coverage:
    """What the schemes cover: groups, tenant goals, and what was found but left out."""

    groups: tuple[Group, ...]
    goals: tuple[TenantGoal, ...] = ()
    found: int = 0  # cgroups found under the selectors
    dropped: tuple[str, ...] = ()  # found but past MAX_MEMCGS
    mechanism: str = ""  # how tenant shares are enforced: "node_memcg_used_bp", "weighted_quota", "" (no tenants)

    def note(self) -> str | None:
        """The log line for cgroups left out, or None when all are covered."""
        if not self.dropped:
            return None
        shown = ", ".join(self.dropped[:5]) + (", ..." if len(self.dropped) > 5 else "")
        return (
            f"damos engine: {self.found} cgroups under processes.manage, only the first {MAX_MEMCGS} get DAMOS"
            f" schemes; not covered: {shown}"
        )

    def status(self) -> tuple[str, ...]:
        """Words for `status` (kernel_features_used): cgroups with schemes of their own / cgroups found."""
        memcgs = sum(1 for g in self.groups if g.memcg is not None)
        return (f"memcg_schemes:{memcgs}/{self.found}",) if self.found else ()


def tenant_for(tenants: Sequence[Tenant], memcg: str) -> str:
    """The tenant a cgroup belongs to: the one whose cgroup selector is the longest prefix of it, else `other`."""
    best: Tenant | None = None
    for t in tenants:
        cg = t.match.cgroup
        if cg is None:
            continue
        prefix = "/" + cg.strip("/")
        inside = prefix == "/" or memcg == prefix or memcg.startswith(prefix + "/")
        if inside and (best is None or t.specificity > best.specificity):
            best = t
    return best.name if best is not None else OTHER


def shares(groups: Sequence[Group], tenants: Sequence[Tenant]) -> tuple[Group, ...]:
    """The groups with their share of the promotion quota: by tenant weight, split equally within a tenant."""
    if not groups:
        return ()
    weight = {t.name: t.weight for t in tenants}
    per: dict[str, int] = {}
    for g in groups:
        per[g.tenant] = per.get(g.tenant, 0) + 1
    total = sum(weight.get(name, 1.0) for name in per)
    return tuple(Group(g.memcg, g.tenant, weight.get(g.tenant, 1.0) / total / per[g.tenant], g.exclude) for g in groups)


def coverage(
    found: Sequence[str],
    manage_all: bool,
    tenants: Sequence[Tenant],
    goal_metrics: Sequence[str],
    fast_total: int,
    capacity: int,
) -> Coverage:
    """The groups and tenant goals for `found` cgroups (from the selectors, first found first, duplicates
    dropped). manage_all: processes.manage has no cgroup selector (then `found` holds the tenants' cgroups).
    fast_total: bytes of the fast node the goals read; capacity: the fast tier's, for percent amounts."""
    unique = list(dict.fromkeys("/" + c.strip("/") if c.strip("/") else "/" for c in found))
    kept, dropped = unique[:MAX_MEMCGS], tuple(unique[MAX_MEMCGS:])
    groups = [Group(m, tenant_for(tenants, m)) for m in kept]
    if manage_all:
        groups.insert(0, Group(None, OTHER, exclude=tuple(kept)))
    mechanism = ""
    goals: list[TenantGoal] = []
    if tenants:
        mechanism = GOAL_USED if GOAL_USED in goal_metrics else "weighted_quota"
    if mechanism == GOAL_USED and fast_total > 0:
        b = budgets(tenants, capacity)
        for t in tenants:
            mine = tuple(g.memcg for g in groups if g.memcg is not None and g.tenant == t.name)
            cap = b[t.name].fast_max
            capped = t.fast_max is not None and cap < capacity and GOAL_FREE in goal_metrics
            if not mine or t.match.cgroup is None or (b[t.name].fast_min <= 0 and not capped):
                continue
            used_bp = min(10000, b[t.name].fast_min * 10000 // fast_total)
            free_bp = max(0, 10000 - min(10000, cap * 10000 // fast_total)) if capped else None
            goals.append(TenantGoal(t.name, "/" + t.match.cgroup.strip("/"), mine, used_bp, free_bp))
    return Coverage(shares(groups, tenants), tuple(goals), len(unique), dropped, mechanism)
