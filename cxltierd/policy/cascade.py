"""Placement over three or more tiers (HBM + DDR + CXL, or DDR + CXL + far CXL): the hottest memory in the fastest
tier, warm memory in the middle, cold memory in the slowest.

The two-role decision (cxltierd.policy.decide) runs per pair of adjacent tiers, each run seeing the regions of its
two tiers: promotions, exchanges and pressure demotions only ever cross one boundary, so memory climbs and sinks a
tier at a time. The pairs run slowest first (a full middle tier sheds into the slowest before the fastest sheds
into it), then again from the second pair down (the room the fastest pair's promotions left in the middle tier is
filled from below in the same tick). The evidence is strong enough to skip a tier when a region further down is
at least STRONG times hotter than the hottest region of the tier in between (and above the promotion floor): it
joins the upper pair's candidates and goes straight up; when that pair has no room for it, its own pair sees it on
the way back up, so it still climbs one tier. Each pair sees the node usage, the rate-limit budget and
the cooldowns that the pairs before it planned, so a region moves at most once per tick. On the way up a middle
tier counts what the tier above must shed as already there (its own pressure demotion makes the room), and an upper
pair may fill the tier below it up to its min_free mark rather than its max_used mark (an exchange is a swap, but
decide checks the victim's room first).

The tiers are the policy's `tiers.order` (tier kinds, fastest first), else the topology's tiers; the cascade applies
when at least three of them have live nodes and the policy names no `tiers.fast` / `tiers.slow` (those keep the two
roles they name). Without `tiers.order`, a host with an `unknown` tier (a node no evidence classifies, such as the
lab's CPU-less RAM node) keeps the two roles: memory is not sent to a tier whose place nobody knows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from cxltierd.model import Move, Plan, RegionHeat
from cxltierd.policy.roles import pinned_tier
from cxltierd.policy.schema import MiB, Policy, RateLimit
from cxltierd.topology import Topology

if TYPE_CHECKING:
    from cxltierd.policy.decide import PlacementState

STRONG = 4.0  # a region this many times hotter than the middle tier's hottest skips it


def cascade_tiers(topology: Topology, policy: Policy, live: set[int]) -> list[tuple[int, ...]]:
    """The tiers to cascade over, fastest first, as tuples of live node ids (tiers without a live node left out);
    empty when the policy names fast and slow roles."""
    if policy.tiers.fast or policy.tiers.slow:
        return []
    names = policy.tiers.order or tuple(t.name for t in topology.tiers)
    if not policy.tiers.order and "unknown" in names:
        return []
    by_name = {t.name: t.nodes for t in topology.tiers}
    out = [tuple(n for n in by_name.get(name, ()) if n in live) for name in names]
    return [t for t in out if t]


def applies(topology: Topology, policy: Policy, live: set[int]) -> bool:
    """Whether decide() cascades: three or more live tiers and no fast/slow roles in the policy."""
    return len(cascade_tiers(topology, policy, live)) >= 3


def cascade(
    topology: Topology,
    heat: Sequence[RegionHeat],
    policy: Policy,
    state: PlacementState,
    now: float,
    pair: Callable[[Topology, Sequence[RegionHeat], Policy, PlacementState, float], Plan],
) -> Plan:
    """Plan this tick's moves tier pair by tier pair (see the module docstring). `state` is decide's PlacementState,
    `pair` the two-role decide itself (passed in: this module sits below decide)."""
    free = dict(state.free_bytes)
    avail = dict(state.available_bytes)
    last = dict(state.last_moved)
    procs = state.processes
    tiers = cascade_tiers(topology, policy, set(free))
    rank = {n: i for i, nodes in enumerate(tiers) for n in nodes}
    floor = max(policy.hotness.hot_threshold, policy.hotness.min_samples * state.resolution)
    pinned = {pid for pid, p in procs.items() if pinned_tier(policy, p) is not None}
    budget = policy.budget_bytes()
    moves: list[Move] = []
    notes: list[str] = []
    moved: set[tuple[int, int]] = set()
    # Strong evidence: a region far hotter than every region of the tier above it belongs to the fastest pair whose
    # middle tier it beats by STRONG, and only that pair sees it.
    hottest = [max((r.accesses for r in heat if rank.get(r.node) == k), default=0.0) for k in range(len(tiers))]
    bars = [max(floor, STRONG * hottest[j + 1]) for j in range(len(tiers) - 1)]
    strong = {
        r.key: j
        for r in heat
        if (k := rank.get(r.node)) is not None and r.pid not in pinned
        for j in [next((j for j in range(k - 1) if r.accesses >= bars[j]), None)]
        if j is not None
    }
    kind = {n.node: n.kind for n in topology.nodes}

    def total(n: int) -> int:
        return state.total_bytes.get(n) or next((x.total_bytes for x in topology.nodes if x.node == n), 0)

    def room(n: int) -> int:
        return avail.get(n, free.get(n, 0))

    def overflow(nodes: tuple[int, ...]) -> int:
        """Bytes the nodes under pressure must shed to get back to their max_used mark."""
        out = 0
        for n in nodes:
            mark = policy.watermark(kind.get(n, "unknown"))
            if room(n) < total(n) * mark.min_free_percent / 100:
                out += max(0, total(n) - room(n) - int(total(n) * mark.max_used_percent / 100))
        return out

    n_pairs = len(tiers) - 1
    pairs = [*range(n_pairs - 1, -1, -1), *range(1, n_pairs)]
    for step, i in enumerate(pairs):
        if budget <= 0:
            break

        def seen(r: RegionHeat, i: int = i, late: bool = step >= n_pairs) -> bool:
            k = rank.get(r.node)
            if k is None or r.key in moved:
                return False
            if r.key in strong:  # its skip pair first; unmoved there (no room), its own pair on the way back up
                return strong[r.key] == i or (late and i == k - 1)
            return k in (i, i + 1) or r.pid in pinned

        # On the way up, a middle tier makes room for what the tier above must shed: it sees that memory as if it
        # had already arrived, so its own pressure demotion frees the room one pair further down.
        f, a = dict(free), dict(avail)
        need = overflow(tiers[i - 1]) if i > 0 and step < n_pairs else 0
        for n in tiers[i] if need else ():
            share = need // len(tiers[i])
            f[n] -= share
            if n in a:
                a[n] -= share
        # An exchange into a middle tier at its max_used mark is a swap (the victim comes in, the candidate leaves),
        # but decide checks the victim's room first: lend the middle tier the room between its max_used and
        # min_free marks, at most this tick's budget (whatever stays there is shed a tier down by a later tick).
        if i + 1 < n_pairs:
            for n in tiers[i + 1]:
                mark = policy.watermark(kind.get(n, "unknown"))
                headroom = 100 - mark.min_free_percent - mark.max_used_percent  # up to the pressure mark
                lend = min(budget, max(0, int(total(n) * headroom / 100)))
                f[n] = f.get(n, 0) + lend
                if n in a:
                    a[n] += lend
        sub = replace(
            policy,
            tiers=replace(policy.tiers, fast=tiers[i], slow=tiers[i + 1]),
            rate_limit=RateLimit(mb_per_s=policy.rate_limit.mb_per_s, mb_per_interval=budget / MiB),
        )
        st = replace(state, free_bytes=f, available_bytes=a, last_moved=dict(last))
        plan = pair(topology, [r for r in heat if seen(r)], sub, st, now)
        for m in plan.moves:
            moves.append(m)
            moved.add(m.key)
            last[m.key] = now
            budget -= m.size
            for node, delta in ((m.src, m.size), (m.dst, -m.size)):
                free[node] = free.get(node, 0) + delta
                if node in avail:
                    avail[node] += delta
        notes += [n for n in plan.notes if n not in notes]
    return Plan(moves=tuple(moves), notes=tuple(notes))
