"""Placement baselines cxltierd's policy is measured against, as decision functions for the same loop.

Each factory returns a `Decide` (topology, heat, policy, state, now) -> Plan with its own memory in a closure.
They spend the same rate limit and respect the same watermarks as cxltierd (via Planner); the loop runs them
with the heat unsmoothed (half_life 0).
- static: first touch, never migrate;
- promote-on-access: the kernel's NUMA-balancing tiering idea: a slow region is promoted on its first sampled
  access (in address order, as faults come, not by heat) while the fast node has room, and the fast tier is kept
  below its mark by demoting the least recently accessed regions (LRU age), as kswapd demotion does;
- age: memtierd's age policy idea: demote a fast region idle for `idle` seconds, promote a slow region active in
  `active` consecutive samples, when there is room (no exchange);
- oracle: knows every region's access rate over the next interval (from the simulator) and moves toward the
  hottest set filling the fast tier, hottest first, paying the same migration costs and limits; with three or more
  tiers, tier pair by tier pair as cxltierd's cascade does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from cxltierd.loop import Decide
from cxltierd.model import Plan, RegionHeat
from cxltierd.policy.cascade import applies, cascade
from cxltierd.policy.decide import Key, PlacementState, Planner
from cxltierd.policy.decide import decide as cxltierd_decide
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

BASELINES = ("static", "promote-on-access", "age", "oracle")


def _setup(topology: Topology, policy: Policy, state: PlacementState) -> Planner | None:
    live = {n for n in state.free_bytes if n in set(topology.node_ids)}
    rl = roles(topology, policy, live)
    if not rl.fast or not rl.slow:
        return None
    return Planner(topology, policy, state, rl)


def _demote_to_fit(pl: Planner, victims: list[RegionHeat], node: int, size: int, why: str) -> bool:
    """Demote victims from `node` (in order) until `size` more bytes fit under its mark."""
    for v in victims:
        if pl.used[node] + size <= pl.limit(node):
            return True
        if v.node != node or v.key in pl.moved:
            continue
        dst = pl.room(pl.roles.slow, v.size)
        if dst is None or not pl.add(v, dst, why):
            return False
    return pl.used[node] + size <= pl.limit(node)


def static() -> Decide:
    """Never move anything: placement stays where first touch put it."""

    def decide(
        topology: Topology, heat: Sequence[RegionHeat], policy: Policy, state: PlacementState, now: float
    ) -> Plan:
        return Plan()

    return decide


def promote_on_access() -> Decide:
    """Promote a slow region on its first sampled access while there is room; demote the least recently accessed
    fast regions to keep the fast tier below its mark (the kernel's NUMA-balancing tiering idea)."""
    last_access: dict[Key, float] = {}

    def decide(
        topology: Topology, heat: Sequence[RegionHeat], policy: Policy, state: PlacementState, now: float
    ) -> Plan:
        for r in heat:
            if r.accesses > 0:
                last_access[r.key] = now
        pl = _setup(topology, policy, state)
        if pl is None:
            return Plan()
        fast = set(pl.roles.fast)
        lru = sorted((r for r in heat if r.node in fast), key=lambda r: last_access.get(r.key, -1.0))
        for node in pl.roles.fast:  # kswapd: keep each fast node under its mark
            if pl.pressure(node):
                _demote_to_fit(pl, lru, node, 0, "demote: LRU")
        for r in heat:  # hint faults arrive in address order, not by heat
            if r.node in fast or r.accesses <= 0 or r.key in pl.moved:
                continue
            dst = pl.room(pl.roles.fast, r.size, most_free=True)
            if dst is None:
                node = pl.roles.fast[0]
                if not _demote_to_fit(pl, lru, node, r.size, "demote: LRU, room for a promotion"):
                    break
                dst = node
            if not pl.add(r, dst, "promote: accessed"):
                break
        return Plan(moves=tuple(pl.moves), notes=tuple(pl.notes))

    return decide


def age(idle: float = 30.0, active: int = 2) -> Decide:
    """Demote fast regions idle for `idle` seconds, promote slow regions active in `active` consecutive samples,
    when there is room (memtierd's age policy idea)."""
    idle_since: dict[Key, float] = {}
    streak: dict[Key, int] = {}

    def decide(
        topology: Topology, heat: Sequence[RegionHeat], policy: Policy, state: PlacementState, now: float
    ) -> Plan:
        for r in heat:
            if r.accesses > 0:
                idle_since.pop(r.key, None)
                streak[r.key] = streak.get(r.key, 0) + 1
            else:
                idle_since.setdefault(r.key, now)
                streak[r.key] = 0
        pl = _setup(topology, policy, state)
        if pl is None:
            return Plan()
        fast = set(pl.roles.fast)
        for r in heat:
            if r.node in fast and now - idle_since.get(r.key, now) >= idle:
                dst = pl.room(pl.roles.slow, r.size)
                if dst is None or not pl.add(r, dst, f"demote: idle {now - idle_since[r.key]:.0f}s"):
                    break
        for r in heat:
            if r.node not in fast and streak.get(r.key, 0) >= active:
                dst = pl.room(pl.roles.fast, r.size, most_free=True)
                if dst is None or not pl.add(r, dst, "promote: active"):
                    break
        return Plan(moves=tuple(pl.moves), notes=tuple(pl.notes))

    return decide


def oracle(future: Callable[[float, float], Mapping[Key, float]]) -> Decide:
    """`future(t0, t1)`: every region's mean access rate over [t0, t1) (the simulator's mean_rates). On a host
    with three or more tiers it cascades as cxltierd does (cxltierd.policy.cascade: tier pair by tier pair, a
    strong region skipping a tier), each pair filled hottest first by next interval's true rates."""

    def two_roles(
        topology: Topology, heat: Sequence[RegionHeat], policy: Policy, state: PlacementState, now: float
    ) -> Plan:
        pl = _setup(topology, policy, state)
        if pl is None:
            return Plan()
        rate = {r.key: r.accesses for r in heat}
        fast = set(pl.roles.fast)
        room = sum(pl.limit(n) for n in pl.roles.fast) - sum(pl.used[n] for n in pl.roles.fast)
        room += sum(r.size for r in heat if r.node in fast)  # capacity the managed regions may fill
        ranked = sorted(heat, key=lambda r: -rate.get(r.key, 0.0))
        want: set[Key] = set()
        for r in ranked:
            if rate.get(r.key, 0.0) <= 0 or r.size > room:
                break
            want.add(r.key)
            room -= r.size
        victims = sorted((r for r in heat if r.node in fast and r.key not in want), key=lambda r: rate.get(r.key, 0.0))
        vi = 0
        for r in ranked:
            if r.key not in want:
                break
            if r.node in fast:
                continue
            dst = pl.room(pl.roles.fast, r.size, most_free=True)
            while dst is None and vi < len(victims):
                v = victims[vi]
                vi += 1
                slow_dst = pl.room(pl.roles.slow, v.size)
                if slow_dst is None or not pl.add(v, slow_dst, "demote: colder next interval"):
                    return Plan(moves=tuple(pl.moves), notes=tuple(pl.notes))
                dst = pl.room(pl.roles.fast, r.size, most_free=True)
            if dst is None or not pl.add(r, dst, "promote: hot next interval"):
                break
        return Plan(moves=tuple(pl.moves), notes=tuple(pl.notes))

    def decide(
        topology: Topology, heat: Sequence[RegionHeat], policy: Policy, state: PlacementState, now: float
    ) -> Plan:
        rate = future(now, now + policy.interval)
        true = [replace(r, accesses=rate.get(r.key, 0.0)) for r in heat]
        live = {n for n in state.free_bytes if n in set(topology.node_ids)}
        if applies(topology, policy, live):
            return cascade(topology, true, policy, replace(state, resolution=0.0), now, two_roles)
        return two_roles(topology, true, policy, state, now)

    return decide


def latency_oracle(future: Callable[[float, float], Mapping[Key, float]]) -> Decide:
    """`objective: latency` (cxltierd.policy.latency) fed every region's true mean rate over the next interval
    instead of the sampled heat, with no hysteresis, noise floor or cooldown: it knows the future and the model."""

    def decide(
        topology: Topology, heat: Sequence[RegionHeat], policy: Policy, state: PlacementState, now: float
    ) -> Plan:
        rate = future(now, now + policy.interval)
        true = [replace(r, accesses=rate.get(r.key, 0.0)) for r in heat]
        pol = replace(
            policy,
            objective="latency",
            cooldown=0.0,
            hotness=replace(policy.hotness, hysteresis=0.0, min_samples=0.0),
        )
        return cxltierd_decide(topology, true, pol, replace(state, resolution=0.0, last_moved={}), now)

    return decide
