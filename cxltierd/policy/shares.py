"""Placement with tenants: the fast tier shared by guarantees, caps and weights (pure; decide() calls `place`).

Each tick, after pins, with the tenants of policy.tenants (and the implicit `other`):
1. targets: every tenant's fast-tier bytes under a weighted max-min fair share. Its demand is the bytes of its hot
   regions (heat at the promotion floor or above), bounded by its cap; it first gets its guarantee (up to its
   demand), then the rest of the fast tier is split in proportion to weight x heat (the tenant's summed accesses/s),
   water-filled so nobody gets more than its demand.
2. caps: a tenant above fast_max demotes its coldest fast regions until it is back under the cap.
3. pressure: a fast node below min_free sheds cold regions (below the promotion floor) first, then hot ones of
   tenants that stay at or above their target, then the rest; within each, batch tenants' before latency tenants',
   coldest first; a tenant's guaranteed bytes go last.
4. guarantees: a tenant whose hot fast-tier bytes are below min(fast_min, demand) promotes its hottest slow regions,
   into free fast room or by displacing cold regions, or hot ones of tenants above their own guarantee (batch before
   latency, coldest first). A guarantee covers hot memory only: a tenant's cold pages on the fast tier (startup
   code, shared libraries it cannot move) neither count toward it nor are protected by it.
5. fair share: a tenant below its target promotes likewise, displacing regions of tenants above their target by
   more than a dead band (SLACK of the fast tier, or four regions), so noise in heat moves nothing back and forth.
6. the rest: a hot slow region takes free fast room not owed to a tenant below its target (within its cap), or
   displaces a colder fast region of its own tenant when clearly hotter (hysteresis, as without tenants).
Cooldown and the rate limit hold throughout: only regions not moved within the cooldown are candidates or victims,
and every move is charged to the interval's budget.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cxltierd.model import Process, RegionHeat
from cxltierd.policy.tenants import Budget, Tenant, budgets, tenant_of

if TYPE_CHECKING:
    from cxltierd.policy.decide import Planner

SLACK = 0.02  # dead band of the fair share, as a fraction of the fast tier


def targets(
    bud: Mapping[str, Budget], demand: Mapping[str, int], heat: Mapping[str, float], usable: int
) -> dict[str, int]:
    """Fast-tier bytes per tenant: guarantees up to demand first, then the rest by weight x heat, water-filled
    (no tenant above min(demand, cap)). When the guarantees alone do not fit `usable`, they shrink in proportion."""
    want = {t: min(demand.get(t, 0), b.fast_max) for t, b in bud.items()}
    give = {t: min(b.fast_min, want[t]) for t, b in bud.items()}
    usable = max(0, usable)
    floor = sum(give.values())
    if floor > usable:
        return {t: g * usable // floor for t, g in give.items()}
    rest = usable - floor
    claim = {t: bud[t].weight * heat.get(t, 0.0) for t in bud}
    active = {t for t in bud if want[t] > give[t] and claim[t] > 0}
    while active and rest > 0:
        total = sum(claim[t] for t in active)
        full = [t for t in active if want[t] - give[t] <= rest * claim[t] / total]
        if not full:
            for t in active:
                give[t] += int(rest * claim[t] / total)
            break
        for t in full:
            rest -= want[t] - give[t]
            give[t] = want[t]
            active.discard(t)
    return give


@dataclass
class Book:
    """Per-tenant fast-tier bytes as planned moves apply (all, and those of hot regions), with each tenant's bounds
    and target."""

    budget: dict[str, Budget]
    use: Counter[str]
    hot: Counter[str]
    target: dict[str, int]
    slack: int
    floor: float

    def move(self, t: str, r: RegionHeat, sign: int) -> None:
        """Account region r of tenant t entering (+1) or leaving (-1) the fast tier."""
        self.use[t] += sign * r.size
        if r.accesses >= self.floor:
            self.hot[t] += sign * r.size

    def protected(self, t: str, r: RegionHeat, demand: int) -> bool:
        """Is fast region r part of what tenant t's guarantee protects: hot, with t at or below its guarantee."""
        return r.accesses >= self.floor and self.hot[t] <= self.guarantee(t, demand)

    def guarantee(self, t: str, demand: int) -> int:
        """The bytes a tenant's guarantee protects now: its fast_min, or its demand when that is smaller."""
        return min(self.budget[t].fast_min, demand)


def place(
    pl: Planner,
    placed: Sequence[RegionHeat],
    movable: Sequence[RegionHeat],
    processes: Mapping[int, Process],
    tenants: Sequence[Tenant],
) -> None:
    """Plan the moves of steps 2-6 (module docstring) into `pl`. `placed`: every managed, unpinned region on a live
    node (for the accounting); `movable`: those of them out of their cooldown."""
    fast = set(pl.roles.fast)
    capacity = sum(pl.total[n] for n in pl.roles.fast)
    names: dict[int, str] = {}

    def who(pid: int) -> str:
        if pid not in names:
            names[pid] = tenant_of(tenants, processes.get(pid))
        return names[pid]

    bud = budgets(tenants, capacity)
    use: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    demand: Counter[str] = Counter()
    heat: dict[str, float] = {}
    for r in placed:
        t = who(r.pid)
        if r.node in fast:
            use[t] += r.size
            hot[t] += r.size if r.accesses >= pl.floor else 0
        if r.accesses >= pl.floor:
            demand[t] += r.size
            heat[t] = heat.get(t, 0.0) + r.accesses
    foreign = sum(pl.used[n] for n in fast) - sum(use.values())  # kernel, page cache, unmanaged processes
    usable = sum(pl.limit(n) for n in fast) - max(0, foreign)
    biggest = max((r.size for r in placed), default=0)
    book = Book(bud, use, hot, targets(bud, demand, heat, usable), max(4 * biggest, int(usable * SLACK)), pl.floor)

    mov_fast = sorted((r for r in movable if r.node in fast), key=lambda r: r.accesses)
    mov_slow = sorted((r for r in movable if r.node not in fast and r.accesses >= pl.floor), key=lambda r: -r.accesses)
    _caps(pl, book, mov_fast, who)
    _pressure(pl, book, mov_fast, who, demand)
    guar = {t: book.guarantee(t, demand[t]) for t in bud}
    _fill(pl, book, mov_slow, mov_fast, who, goal=guar, slack=0, why="guarantee", hot_only=True)
    _fill(pl, book, mov_slow, mov_fast, who, goal=book.target, slack=book.slack, why="fair share", hot_only=False)
    _rest(pl, book, mov_slow, mov_fast, who)


def _caps(pl: Planner, book: Book, fast: list[RegionHeat], who: Callable[[int], str]) -> None:
    for r in fast:
        t = who(r.pid)
        cap = book.budget[t].fast_max
        if book.use[t] <= cap or r.key in pl.moved:
            continue
        dst = pl.room(pl.roles.slow, r.size)
        if dst is None:
            pl.notes.append("slow tiers full: cannot demote")
            return
        reason = f"cap: tenant {t} holds {book.use[t] >> 20} MiB of the fast tier, above its fast_max {cap >> 20} MiB"
        if not pl.add(r, dst, reason):
            return
        book.move(t, r, -1)


def _pressure(
    pl: Planner, book: Book, fast: list[RegionHeat], who: Callable[[int], str], demand: Mapping[str, int]
) -> None:
    """Fast nodes below min_free shed cold regions first, then hot ones of tenants above their target (so the
    fair-share step has nothing to take back), batch before latency, coldest first; guaranteed bytes last."""
    queues: dict[int, dict[str, deque[RegionHeat]]] = {}  # built when a node is first asked for

    def order(t: str, r: RegionHeat) -> tuple[bool, bool, bool, bool, float]:
        """Sort key of a tenant's coldest region: guaranteed bytes last, cold before hot, then a tenant that stays
        at or above its target before one that would drop below it, batch before latency, coldest first."""
        protected = book.protected(t, r, demand.get(t, 0))
        owed = book.use[t] - r.size < book.target.get(t, 0)
        return (protected, r.accesses >= pl.floor, owed, book.budget[t].klass == "latency", r.accesses)

    def pick(node: int) -> RegionHeat | None:
        if node not in queues:
            queues[node] = _by_tenant([r for r in fast if r.node == node], who)
        heads = []
        for t, q in queues[node].items():
            while q and q[0].key in pl.moved:
                q.popleft()
            if q:
                heads.append((order(t, q[0]), t))
        if not heads:
            return None
        return queues[node][min(heads)[1]].popleft()

    def reason(r: RegionHeat, why: str) -> str:
        t = who(r.pid)
        return f"demote: {why}, tenant {t} ({book.budget[t].klass}) gives first"

    def shed_one(r: RegionHeat) -> None:
        book.move(who(r.pid), r, -1)

    pl.shed(pick, reason, shed_one)


def _fill(
    pl: Planner,
    book: Book,
    slow: list[RegionHeat],
    fast: list[RegionHeat],
    who: Callable[[int], str],
    *,
    goal: Mapping[str, int],
    slack: int,
    why: str,
    hot_only: bool,
) -> None:
    """Promote hot slow regions of tenants whose fast-tier bytes (with `hot_only`, those of hot regions) are below
    `goal`, into free room or by displacing regions of tenants that stay at or above their own `goal` + `slack`
    without them (with `hot_only` a cold region counts toward nothing, so it can always go), batch before latency,
    coldest first."""
    have = book.hot if hot_only else book.use
    queues = _by_tenant(fast, who)

    def victim(t: str) -> RegionHeat | None:
        """The coldest region of a batch tenant above its goal + slack (then of a latency one), not of `t`."""
        best: tuple[tuple[bool, float], RegionHeat] | None = None
        for vt, q in queues.items():
            while q and q[0].key in pl.moved:
                q.popleft()
            if vt == t or not q:
                continue
            counted = not hot_only or q[0].accesses >= book.floor
            if have[vt] - (q[0].size if counted else 0) < goal[vt] + slack:
                continue
            key = (book.budget[vt].klass == "latency", q[0].accesses)
            if best is None or key < best[0]:
                best = (key, q[0])
        return None if best is None else best[1]

    for c in slow:
        t = who(c.pid)
        if c.key in pl.moved or have[t] + c.size > goal[t] or book.use[t] + c.size > book.budget[t].fast_max:
            continue
        dst = pl.room(pl.roles.fast, c.size, most_free=True)
        # No room: displace victims until a fast node has room for c. A node above its limit (memory cxltierd does
        # not manage grew) takes several, up to the most any fast node lacks; a victim is never demoted for nothing
        # beyond that.
        lack = 0 if dst is not None else max(pl.used[n] + c.size - pl.limit(n) for n in pl.roles.fast)
        freed = 0
        while dst is None and freed < lack:
            v = victim(t)
            if v is None:
                break
            if v.size + c.size > pl.budget:
                pl.notes.append("rate limit reached")
                return
            slow_dst = pl.room(pl.roles.slow, v.size)
            if slow_dst is None:
                pl.notes.append("slow tiers full: cannot make room in the fast tier")
                return
            vt = who(v.pid)
            pl.add(v, slow_dst, f"demote: tenant {vt} is above its {why}, tenant {t} below")
            book.move(vt, v, -1)
            freed += v.size
            if pl.used[v.node] + c.size <= pl.limit(v.node):
                dst = v.node
        if dst is None:
            continue
        if not pl.add(c, dst, f"promote: tenant {t} below its {why} ({c.accesses:.3g} acc/s on {pl.name(c.node)})"):
            return
        book.move(t, c, +1)


def _rest(pl: Planner, book: Book, slow: list[RegionHeat], fast: list[RegionHeat], who: Callable[[int], str]) -> None:
    """Free room not owed to a tenant below its target, then exchanges within one tenant (hysteresis holds)."""
    own = _by_tenant(fast, who)
    settled: set[str] = set()  # tenants whose hottest slow region did not beat their coldest fast one
    for c in slow:
        if c.key in pl.moved:
            continue
        t = who(c.pid)
        if book.use[t] + c.size > book.budget[t].fast_max:
            continue
        owed = sum(max(0, book.target[x] - book.use[x]) for x in book.budget if x != t)
        free = sum(max(0, pl.limit(n) - pl.used[n]) for n in pl.roles.fast)
        dst = pl.room(pl.roles.fast, c.size, most_free=True) if free - owed >= c.size else None
        if dst is not None:
            if not pl.add(c, dst, f"promote: {c.accesses:.3g} acc/s on {pl.name(c.node)}, room on {pl.name(dst)}"):
                return
            book.move(t, c, +1)
            continue
        q = own.get(t)
        while q and q[0].key in pl.moved:
            q.popleft()
        if t in settled or not q:
            continue
        v = q[0]
        if not pl.beats(c.accesses, v.accesses):
            settled.add(t)  # the candidates come hottest first: no colder one of t will beat it either
            continue
        if pl.used[v.node] - v.size + c.size > pl.limit(v.node):
            continue  # the node stays above its limit without v: the exchange would only demote
        if v.size + c.size > pl.budget:
            pl.notes.append("rate limit reached")
            return
        slow_dst = pl.room(pl.roles.slow, v.size)
        if slow_dst is None:
            continue
        pl.add(v, slow_dst, f"demote: {v.accesses:.3g} acc/s makes room for {c.accesses:.3g} acc/s of tenant {t}")
        q.popleft()
        book.move(t, v, -1)
        reason = f"promote: {c.accesses:.3g} acc/s > coldest fast region of tenant {t}"
        if pl.used[v.node] + c.size <= pl.limit(v.node) and pl.add(c, v.node, reason):
            book.move(t, c, +1)


def _by_tenant(fast: list[RegionHeat], who: Callable[[int], str]) -> dict[str, deque[RegionHeat]]:
    """Each tenant's fast regions, coldest first (`fast` is sorted by heat)."""
    out: dict[str, deque[RegionHeat]] = {}
    for r in fast:
        out.setdefault(who(r.pid), deque()).append(r)
    return out
