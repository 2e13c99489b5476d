"""The placement decision: a pure function (topology, heat, policy, state, now) -> Plan.

Each tick the loop hands `decide` the smoothed heat of every managed region and the available memory of every node
(free above the kernel's reserve plus cheaply reclaimable page cache and slab; MemFree where that is unknown).
In order, it plans:
1. pins: regions of pinned processes that sit outside their tier move onto it;
2. pressure demotions: a fast node with less than min_free_percent free sheds its coldest regions to the
   fastest slow node with room, until it is back under max_used_percent;
3. promotions: the hottest slow regions move to a fast node with room below max_used_percent; when the fast
   tier is full, a candidate displaces the coldest fast region only if it is hotter by the hysteresis fraction
   and by the floor (the cold one is demoted first, then the hot one promoted).
The floor is hot_threshold, or min_samples sampled accesses at the tracker's resolution if that is more: a heat
difference of one or two sampled accesses is noise, and chasing it only moves memory back and forth.
Everything stays within the rate limit (bytes per interval) and skips regions moved less than `cooldown` seconds
ago, so a region cannot ping-pong. With tenants in the policy, steps 2 and 3 are policy/shares.py's instead
(guarantees, caps and weighted fair shares of the fast tier). Excluded and unmanaged processes are never touched; a node missing from the
state (unplugged) is neither a source nor a target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from cxltierd.model import Move, Plan, Process, RegionHeat
from cxltierd.policy import cascade, latency
from cxltierd.policy.roles import Roles, is_managed, pinned_tier, roles
from cxltierd.policy.schema import Policy
from cxltierd.policy.shares import place
from cxltierd.topology import Topology

Key = tuple[int, int]


@dataclass(frozen=True)
class PlacementState:
    """What the loop knows besides heat: node memory now, processes, and when each region last moved."""

    free_bytes: Mapping[int, int]  # MemFree; its keys are the live nodes
    total_bytes: Mapping[int, int]
    processes: Mapping[int, Process] = field(default_factory=dict)
    last_moved: Mapping[Key, float] = field(default_factory=dict)
    resolution: float = 0.0  # accesses/s one sampled access stands for (the tracker's Sample.resolution)
    available_bytes: Mapping[int, int] = field(default_factory=dict)  # room per node (Sample.available_bytes)
    held_until: Mapping[Key, float] = field(default_factory=dict)  # failed moves' backoff (policy/backoff.py)
    measured_bandwidth: Mapping[int, float] = field(default_factory=dict)  # bytes/s per node (PMU counters)


def _rate(heat: float) -> str:
    return f"{heat:.3g} acc/s"


class Planner:
    """Mutable bookkeeping for one decide() call: node usage as planned moves apply, budget, notes."""

    def __init__(self, topology: Topology, policy: Policy, state: PlacementState, roles_: Roles) -> None:
        self.policy = policy
        self.roles = roles_
        self.total = {n: state.total_bytes.get(n) or _topo_total(topology, n) for n in state.free_bytes}
        room = {n: state.available_bytes.get(n, f) for n, f in state.free_bytes.items()}  # page cache is room
        self.used = {n: max(0, self.total[n] - room[n]) for n in state.free_bytes}
        self.budget = policy.budget_bytes()
        # Heat differences below a few sampled accesses are noise: never promote or exchange on them.
        self.floor = max(policy.hotness.hot_threshold, policy.hotness.min_samples * state.resolution)
        # Sampling noise of a smoothed heat h: a Poisson count of h / resolution per interval, smoothed with weight
        # a per tick, has variance a / (2 - a) * resolution * h.
        hl = policy.hotness.half_life
        a = 1.0 - 0.5 ** (policy.interval / hl) if hl > 0 else 1.0
        self.noise = a / (2.0 - a) * state.resolution
        self.moves: list[Move] = []
        self.moved: set[Key] = set()
        self.notes: list[str] = []

    def beats(self, c: float, v: float) -> bool:
        """Is heat c clearly above heat v: by the hysteresis fraction, the floor, and min_samples standard
        deviations of the sampling noise of the difference? (Exchanging two regions of equal heat only churns.)"""
        gap = c - v
        z = self.policy.hotness.min_samples
        return (
            c > v * (1.0 + self.policy.hotness.hysteresis)
            and gap >= self.floor
            and gap * gap >= z * z * self.noise * (c + v)
        )

    def limit(self, node: int) -> int:
        """Usage a move may fill a node up to (its tier's max_used_percent)."""
        mark = self.policy.watermark(self.roles.kind.get(node, "unknown"))
        return int(self.total[node] * mark.max_used_percent / 100)

    def pressure(self, node: int) -> bool:
        """True when the node has less free memory than its tier's min_free_percent."""
        mark = self.policy.watermark(self.roles.kind.get(node, "unknown"))
        return self.total[node] - self.used[node] < self.total[node] * mark.min_free_percent / 100

    def room(self, nodes: Sequence[int], size: int, most_free: bool = False) -> int | None:
        """The first of `nodes` (with most_free: the roomiest) that can take `size` bytes below its limit, or None."""
        fits = [n for n in nodes if self.used[n] + size <= self.limit(n)]
        if not fits:
            return None
        return max(fits, key=lambda n: self.limit(n) - self.used[n]) if most_free else fits[0]

    def add(self, r: RegionHeat, dst: int, reason: str) -> bool:
        """Plan moving the region to `dst` and charge its size; False (noted) when the rate-limit budget is spent."""
        if r.size > self.budget:
            if "rate limit reached" not in self.notes:
                self.notes.append("rate limit reached")
            return False
        self.budget -= r.size
        self.used[r.node] -= r.size
        self.used[dst] += r.size
        self.moves.append(Move(r.pid, r.start, r.size, r.node, dst, reason))
        self.moved.add(r.key)
        return True

    def shed(
        self,
        pick: Callable[[int], RegionHeat | None],
        reason: Callable[[RegionHeat, str], str],
        shed_one: Callable[[RegionHeat], None] = lambda r: None,
    ) -> None:
        """Fast nodes below their min_free mark demote the regions `pick(node)` names, down to max_used. `reason`
        gets the region and why its node sheds; `shed_one` is told of each planned demotion."""
        for node in self.roles.fast:
            if not self.pressure(node):
                continue
            why = f"{self.name(node)} has {100 * (self.total[node] - self.used[node]) / max(1, self.total[node]):.1f}% free"
            while self.used[node] > self.limit(node):
                r = pick(node)
                if r is None:
                    break
                dst = self.room(self.roles.slow, r.size)
                if dst is None:
                    self.notes.append("slow tiers full: cannot demote")
                    return
                if not self.add(r, dst, reason(r, why)):
                    return
                shed_one(r)

    def name(self, node: int) -> str:
        """A node as move reasons name it: "<kind> node <n>"."""
        return f"{self.roles.kind.get(node, 'unknown')} node {node}"


def _topo_total(topology: Topology, node: int) -> int:
    try:
        return topology.node(node).total_bytes
    except KeyError:
        return 0


def decide(topology: Topology, heat: Sequence[RegionHeat], policy: Policy, state: PlacementState, now: float) -> Plan:
    """Plan this tick's moves (see the module docstring). `heat` carries smoothed accesses/s per region."""
    if policy.objective == "latency":  # the pack plan, filtered and balanced by loaded latency (policy/latency.py)
        return latency.plan(topology, heat, policy, state, now, decide)
    live = {n for n in state.free_bytes if n in {x.node for x in topology.nodes}}
    if cascade.applies(topology, policy, live):  # three or more tiers: adjacent pairs (cxltierd.policy.cascade)
        return cascade.cascade(topology, heat, policy, state, now, decide)
    rl = roles(topology, policy, live)
    if not rl.fast or not rl.slow:
        return Plan(notes=("one tier only: nothing to place",))
    pl = Planner(topology, policy, state, rl)
    procs = state.processes

    movable: list[RegionHeat] = []
    placed: list[RegionHeat] = []  # managed and not pinned, in cooldown or not (tenants' accounting)
    pinned: list[tuple[RegionHeat, str]] = []
    verdict: dict[int, str | None] = {}  # pid -> "skip", a pinned tier, or None (movable); once per process
    for r in heat:
        if r.node not in live:
            continue
        if r.pid not in verdict:
            p = procs.get(r.pid)
            verdict[r.pid] = None if p is None else "skip" if not is_managed(policy, p) else pinned_tier(policy, p)
        v = verdict[r.pid]
        if v == "skip":
            continue
        if v is not None:
            pinned.append((r, v))
            continue
        placed.append(r)
        last = state.last_moved.get((r.pid, r.start))
        if last is not None and now - last < policy.cooldown:
            continue
        if state.held_until.get(r.key, now) > now:
            continue
        movable.append(r)

    _pins(pl, pinned, procs)
    if policy.tenants:
        place(pl, placed, movable, procs, policy.tenants)
        return Plan(moves=tuple(pl.moves), notes=tuple(pl.notes))
    fast_set = set(rl.fast)
    victims = sorted((r for r in movable if r.node in fast_set), key=lambda r: r.accesses)
    pl.shed(coldest_first(pl, victims), lambda r, why: f"demote: {why}, {_rate(r.accesses)} is among its coldest")
    candidates = sorted(
        (r for r in movable if r.node not in fast_set and r.accesses >= pl.floor),
        key=lambda r: -r.accesses,
    )
    _promote(pl, candidates, [r for r in victims if r.key not in pl.moved])
    return Plan(moves=tuple(pl.moves), notes=tuple(pl.notes))


def _pins(pl: Planner, pinned: list[tuple[RegionHeat, str]], procs: Mapping[int, Process]) -> None:
    for r, tier in pinned:
        nodes = [n for n in (*pl.roles.fast, *pl.roles.slow) if pl.roles.kind.get(n) == tier]
        if not nodes or r.node in nodes:
            continue
        dst = pl.room(nodes, r.size)
        if dst is None:
            pl.notes.append(f"pinned tier {tier} full")
            continue
        p = procs.get(r.pid)
        pl.add(r, dst, f"pin: pid {r.pid} ({p.name if p else '?'}) is pinned to {tier}, moving from {pl.name(r.node)}")


def coldest_first(pl: Planner, victims: list[RegionHeat]) -> Callable[[int], RegionHeat | None]:
    """A `Planner.shed` picker: the next region of `victims` (in their order) on the node, not moved yet. A node's
    queue is built when the node is first asked for (most ticks no node is under pressure)."""
    queues: dict[int, Iterator[RegionHeat]] = {}

    def pick(node: int) -> RegionHeat | None:
        if node not in queues:
            queues[node] = iter([r for r in victims if r.node == node])
        return next((r for r in queues[node] if r.key not in pl.moved), None)

    return pick


def _promote(pl: Planner, candidates: list[RegionHeat], victims: list[RegionHeat]) -> None:
    vi = 0
    for c in candidates:
        dst = pl.room(pl.roles.fast, c.size, most_free=True)
        if dst is not None:
            if not pl.add(c, dst, f"promote: {_rate(c.accesses)} on {pl.name(c.node)}, room on {pl.name(dst)}"):
                return
            continue
        # Fast tier full: displace the coldest fast region, if the candidate is clearly hotter.
        while vi < len(victims) and victims[vi].key in pl.moved:
            vi += 1
        if vi >= len(victims):
            pl.notes.append("fast tier full of regions moved recently")
            return
        v = victims[vi]
        if not pl.beats(c.accesses, v.accesses):
            pl.notes.append(
                f"fast tier full: hottest candidate {_rate(c.accesses)} not clearly above the coldest fast region"
                f" {_rate(v.accesses)} (hysteresis, sampling noise)"
            )
            return
        if v.size + c.size > pl.budget:
            pl.notes.append("rate limit reached")
            return
        slow_dst = pl.room(pl.roles.slow, v.size)
        if slow_dst is None:
            pl.notes.append("slow tiers full: cannot make room in the fast tier")
            return
        fast_node = v.node
        pl.add(v, slow_dst, f"demote: {_rate(v.accesses)} on {pl.name(fast_node)} makes room for {_rate(c.accesses)}")
        vi += 1
        if pl.used[fast_node] + c.size > pl.limit(fast_node):
            continue  # regions of unequal size: the next victim frees more room
        pl.add(
            c, fast_node, f"promote: {_rate(c.accesses)} on {pl.name(c.node)} > coldest fast region {_rate(v.accesses)}"
        )
