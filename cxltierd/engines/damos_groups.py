"""Which memory the DAMOS engine's migrate schemes cover, and how tenants shape them (pure).

Two kernel facts shape this. A DAMON memcg filter matches one cgroup exactly (not its descendants), and on 6.12
filters only reject, all of them applying (a page is in one memcg: two "only this cgroup" filters leave nothing). And
DAMOS resets a region's age whenever a non-stat scheme is applied to it, even if its page filters left nothing to do
(damos_apply_scheme), so a second migrate scheme over the same region never sees the age the first one needs. So the
schemes cover a set of cgroups with one scheme: one cgroup through an "only this cgroup" filter, several through
"not this cgroup" filters for every other memcg of the host (the complement, at most MAX_EXCLUDE of them; the host's
memcgs are enumerated again with the covered ones, a memcg made in between is not excluded until then).

The covered cgroups: the cgroups named by `processes.manage` cgroup selectors and every cgroup below them with the
memory controller, found by the caller (discovery/cgroups.py), at most MAX_MEMCGS, the first found first; the rest
are not covered (the engine says so in a log line and in `status`). Without a cgroup selector the schemes cover all
memory, and tenants' cgroups form groups of their own (the all-memory group excludes them).

Tenants (policy/tenants.py), matched to a cgroup by the longest cgroup prefix, as tenant_of() matches processes:
- every kernel: one promotion group per tenant with covered cgroups (plus `other`), the promotion quota split in
  proportion to the tenants' weights; a group after the first cannot require age >= 1 (see above);
- where the kernel has the node_memcg_used_bp quota goal (6.19): each tenant with a guarantee also gets a promotion
  scheme whose quota the kernel tunes until the tenant's memory on the fast node reaches the guarantee (in basis
  points of the node); with a cap and node_memcg_free_bp, a demotion scheme tuned until the tenant is back under the
  cap. Elsewhere only the weighted quotas apply (guarantee and cap are not enforced by the kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cxltierd.policy.tenants import OTHER, Tenant, budgets

MAX_MEMCGS = 16  # covered cgroups
MAX_EXCLUDE = 64  # "not this cgroup" filters in one scheme (every page is checked against each)
GOAL_USED = "node_memcg_used_bp"
GOAL_FREE = "node_memcg_free_bp"


@dataclass(frozen=True)
class Group:
    """Memory one scheme covers, as memcg filters: `memcg` only (one cgroup), or all but `exclude`."""

    members: tuple[str, ...] = ()  # the covered cgroups in it; () with memcg None: all memory but `exclude`
    memcg: str | None = None
    exclude: tuple[str, ...] = ()
    tenant: str = OTHER
    share: float = 1.0  # fraction of the promotion quota


@dataclass(frozen=True)
class TenantGoal:
    """A tenant's guarantee (and cap) as kernel quota goals on the fast node."""

    tenant: str
    path: str  # the tenant's cgroup: the goal counts its memory, descendants included
    group: Group  # its covered cgroups
    used_bp: int  # guarantee: node_memcg_used_bp target (0: none)
    free_bp: int | None = None  # cap: node_memcg_free_bp target (10000 - cap), None without a cap


@dataclass(frozen=True)
class Coverage:
    """What the schemes cover: promotion groups, everything covered (demotion, prime), tenant goals, and what was
    found but left out."""

    groups: tuple[Group, ...]
    union: Group | None = Group()  # None: nothing covered
    goals: tuple[TenantGoal, ...] = ()
    found: int = 0  # cgroups found under the selectors
    dropped: tuple[str, ...] = ()  # found but not covered (past MAX_MEMCGS, or too many others to exclude)
    mechanism: str = ""  # how tenant shares are enforced: "node_memcg_used_bp", "weighted_quota", "" (no tenants)

    def note(self) -> str | None:
        """The log line for cgroups left out, or None when all are covered."""
        if not self.dropped:
            return None
        shown = ", ".join(self.dropped[:5]) + (", ..." if len(self.dropped) > 5 else "")
        return (
            f"damos engine: {self.found} cgroups under processes.manage, {self.found - len(self.dropped)} get DAMOS"
            f" schemes (at most {MAX_MEMCGS}, and at most {MAX_EXCLUDE} other memcgs to exclude);"
            f" not covered: {shown}"
        )

    def status(self) -> tuple[str, ...]:
        """Words for `status` (kernel_features_used): covered cgroups / cgroups found."""
        return (f"memcg_schemes:{self.found - len(self.dropped)}/{self.found}",) if self.found else ()


def cover(members: Sequence[str], every: Sequence[str] | None) -> Group | None:
    """A group for these cgroups: one "only" filter, or "not" filters for every other memcg of the host (`every`:
    all of them, None when there were too many to list); None when that cannot be expressed."""
    if len(members) == 1:
        return Group(tuple(members), memcg=members[0])
    if every is None:
        return None
    others = tuple(c for c in every if c not in members)
    return Group(tuple(members), exclude=others) if len(others) <= MAX_EXCLUDE else None


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
    """The groups with their share of the promotion quota, in proportion to their tenants' weights."""
    weight = {t.name: t.weight for t in tenants}
    total = sum(weight.get(g.tenant, 1.0) for g in groups)
    return tuple(Group(g.members, g.memcg, g.exclude, g.tenant, weight.get(g.tenant, 1.0) / total) for g in groups)


def coverage(
    found: Sequence[str],
    manage_all: bool,
    tenants: Sequence[Tenant],
    goal_metrics: Sequence[str],
    fast_total: int,
    capacity: int,
    every: Sequence[str] | None = None,
) -> Coverage:
    """The groups and tenant goals for `found` cgroups (from the selectors, first found first, duplicates
    dropped). manage_all: processes.manage has no cgroup selector (then `found` holds the tenants' cgroups). every:
    all memcgs of the host (None: too many). fast_total: bytes of the fast node the goals read; capacity: the fast
    tier's, for percent amounts."""
    unique = list(dict.fromkeys("/" + c.strip("/") if c.strip("/") else "/" for c in found))
    kept, dropped = unique[:MAX_MEMCGS], list(unique[MAX_MEMCGS:])
    mechanism = "" if not tenants else GOAL_USED if GOAL_USED in goal_metrics else "weighted_quota"
    if not kept and not manage_all:  # nothing to cover (yet): no migrate scheme
        return Coverage((), None, (), len(unique), tuple(dropped), mechanism)
    union = Group() if manage_all else cover(kept, every)
    if union is None:  # too many other memcgs to exclude: the first cgroup alone
        union, dropped = cover(kept[:1], every), kept[1:] + dropped
        kept = kept[:1]
    assert union is not None
    order = [t.name for t in tenants] + [OTHER]  # groups in policy order, `other` last
    by_tenant: dict[str, list[str]] = {name: [] for name in order}
    for m in kept:
        by_tenant[tenant_for(tenants, m)].append(m)
    by_tenant = {name: members for name, members in by_tenant.items() if members}
    groups: list[Group] = []
    if manage_all:
        groups.append(Group(exclude=tuple(kept)))  # all memory but the tenants' cgroups (all of theirs: `other`)
        by_tenant.pop(OTHER, None)
    for name, members in by_tenant.items():
        g = cover(members, every)
        if g is None:  # too many others to exclude: the tenant's first cgroup alone
            g = cover(members[:1], every)
            dropped += members[1:]
        assert g is not None
        groups.append(Group(g.members, g.memcg, g.exclude, name))
    goals: list[TenantGoal] = []
    if mechanism == GOAL_USED and fast_total > 0:
        b = budgets(tenants, capacity)
        for t in tenants:
            mine = next((g for g in groups if g.tenant == t.name and g.members), None)
            cap = b[t.name].fast_max
            capped = t.fast_max is not None and cap < capacity and GOAL_FREE in goal_metrics
            if mine is None or t.match.cgroup is None or (b[t.name].fast_min <= 0 and not capped):
                continue
            used_bp = min(10000, b[t.name].fast_min * 10000 // fast_total)
            free_bp = max(0, 10000 - min(10000, cap * 10000 // fast_total)) if capped else None
            goals.append(TenantGoal(t.name, "/" + t.match.cgroup.strip("/"), mine, used_bp, free_bp))
    return Coverage(shares(groups, tenants), union, tuple(goals), len(unique), tuple(dropped), mechanism)
