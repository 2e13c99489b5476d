"""`objective: latency`: placement that lowers the access-weighted loaded latency (cxltierd.policy.perf) instead of
packing the hottest memory into the fastest tier regardless of its load.

The pack plan (decide with `objective: pack`) comes first. Its moves are then kept only where they lower the total
cost, sum over nodes of demand x loaded latency (demand: the regions' smoothed accesses/s): a promotion into a tier
whose bandwidth is nearly used up would raise its latency for every access it serves by more than the promoted
region gains, and is dropped. Then, for each node of a faster tier whose load makes it costlier at the margin than
the next tier down, its hottest regions move down one tier while each move lowers the cost (the Colloid principle:
balance the tiers' loaded latencies; balancing the marginal cost is its exact form for the mean). A move must gain
at least MARGIN of the region's accesses x the target's idle latency, so the balance point has a dead band and
memory does not thrash across it; cooldowns apply as to every move. Where PMU counters measure a node's bandwidth
(PlacementState.measured_bandwidth, bytes/s), that node's demand is the measurement (every process's traffic, in
64-byte lines) instead of the sum of the sampled region rates; the regions' rates still say what a move shifts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from cxltierd.model import Move, Plan, RegionHeat
from cxltierd.policy.perf import LINE, NodePerf, node_perf
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

if TYPE_CHECKING:
    from cxltierd.policy.decide import PlacementState

MARGIN = 0.05


def _gain(perf: dict[int, NodePerf], demand: dict[int, float], src: int, dst: int, x: float) -> float:
    """How much the total cost (accesses/s x ns) falls when x accesses/s move from src to dst."""
    ds, dd = demand.get(src, 0.0), demand.get(dst, 0.0)
    ps, pd = perf[src], perf[dst]
    before = ds * ps.latency(ds) + dd * pd.latency(dd)
    after = (ds - x) * ps.latency(max(0.0, ds - x)) + (dd + x) * pd.latency(dd + x)
    return before - after


def plan(
    topology: Topology,
    heat: Sequence[RegionHeat],
    policy: Policy,
    state: PlacementState,
    now: float,
    decide: Callable[[Topology, Sequence[RegionHeat], Policy, PlacementState, float], Plan],
) -> Plan:
    """The pack plan filtered and extended for the lowest loaded latency (see the module docstring)."""
    packed = decide(topology, heat, replace(policy, objective="pack"), state, now)
    perf = node_perf(topology)
    rank = {n: t.rank for t in topology.tiers for n in t.nodes}
    kind = {n.node: n.kind for n in topology.nodes}
    by_key = {r.key: r for r in heat}
    demand: dict[int, float] = {}
    for r in heat:
        demand[r.node] = demand.get(r.node, 0.0) + r.accesses
    for n, measured in state.measured_bandwidth.items():  # PMU counters: the node's whole load, not only the sampled
        demand[n] = measured / LINE
    total = {n: state.total_bytes.get(n) or x.total_bytes for x in topology.nodes for n in [x.node]}
    used = {n: total.get(n, 0) - state.available_bytes.get(n, f) for n, f in state.free_bytes.items()}
    budget = policy.budget_bytes()
    moves: list[Move] = []
    notes = list(packed.notes)
    moved: set[tuple[int, int]] = set()

    def take(m: Move, x: float) -> None:
        nonlocal budget
        moves.append(m)
        moved.add(m.key)
        budget -= m.size
        used[m.src] = used.get(m.src, 0) - m.size
        used[m.dst] = used.get(m.dst, 0) + m.size
        demand[m.src] = demand.get(m.src, 0.0) - x
        demand[m.dst] = demand.get(m.dst, 0.0) + x

    dropped = 0
    for m in packed.moves:
        region = by_key.get(m.key)
        x = region.accesses if region is not None else 0.0
        up = m.src in perf and m.dst in perf and rank.get(m.dst, 99) < rank.get(m.src, 99)
        up = up and perf[m.dst].idle_ns <= perf[m.src].idle_ns  # HBM over DDR: packing feeds the cascade
        if up and _gain(perf, demand, m.src, m.dst, x) < MARGIN * x * perf[m.dst].idle_ns:
            dropped += 1
            continue
        take(m, x)
    if dropped:
        notes.append(f"latency: {dropped} promotion(s) dropped, the faster tier's loaded latency would not gain")

    # Balance: shed load from a tier that is costlier at the margin than the next one down.
    tiers = [t.nodes for t in topology.tiers]
    for i in range(len(tiers) - 1):
        for src in tiers[i]:
            if src not in state.free_bytes or src not in perf:
                continue
            if any(d in perf and perf[d].idle_ns < perf[src].idle_ns for d in tiers[i + 1]):
                continue  # a slower-ranked tier that idles faster (DDR under HBM): left to packing
            hot = sorted(
                (r for r in heat if r.node == src and r.key not in moved and _cool(r, state, policy, now)),
                key=lambda r: -r.accesses,
            )
            for r in hot:
                if r.size > budget:
                    notes.append("rate limit reached")
                    break
                fits = [
                    d
                    for d in tiers[i + 1]
                    if d in state.free_bytes
                    and d in perf
                    and used.get(d, 0) + r.size
                    <= total.get(d, 0) * policy.watermark(kind.get(d, "unknown")).max_used_percent / 100
                ]
                if not fits:
                    break
                dst = max(fits, key=lambda d: _gain(perf, demand, src, d, r.accesses))
                gain = _gain(perf, demand, src, dst, r.accesses)
                if gain < MARGIN * r.accesses * perf[dst].idle_ns:
                    continue  # a colder region may still gain (a hot one overshoots the balance)
                reason = (
                    f"balance: {kind.get(src)} node {src} loaded to {perf[src].latency(demand[src]):.0f} ns, "
                    f"{kind.get(dst)} node {dst} at {perf[dst].latency(demand.get(dst, 0.0)):.0f} ns"
                )
                take(Move(r.pid, r.start, r.size, src, dst, reason), r.accesses)
    return Plan(moves=tuple(moves), notes=tuple(dict.fromkeys(notes)))


def _cool(r: RegionHeat, state: PlacementState, policy: Policy, now: float) -> bool:
    """Not moved within the cooldown, and not held back after a failed move."""
    last = state.last_moved.get(r.key)
    return (last is None or now - last >= policy.cooldown) and state.held_until.get(r.key, now) <= now
