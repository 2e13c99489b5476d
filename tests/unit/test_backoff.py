"""Backoff for failed moves: the pure records (doubling holds, capped, cleared by success, forgotten when quiet or
gone), decide() skipping held regions, and the loop holding back a region whose moves keep failing."""

from __future__ import annotations

import pytest

from cxltierd.engines.base import Engines
from cxltierd.loop import Loop
from cxltierd.model import Outcome, Plan, RegionHeat, Sample, Transfer
from cxltierd.policy.backoff import FIRST_TICKS, MAX_TICKS, Strike, held, hold, update
from cxltierd.policy.decide import PlacementState, decide
from cxltierd.policy.schema import build_policy
from cxltierd.topology import Node, Tier, Topology

MiB = 1 << 20
R = 2 * MiB
A, B = (1, 0), (1, R)
TOPO = Topology(
    nodes=(Node(0, "ddr", "t", total_bytes=1000 * R), Node(2, "cxl", "t", total_bytes=1000 * R)),
    tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (2,))),
)


def test_hold_doubles_per_consecutive_failure_up_to_the_cap():
    assert [hold(n, 1.0) for n in range(1, 9)] == [2, 4, 8, 16, 32, 64, 64, 64]
    assert hold(1, 0.5) == FIRST_TICKS * 0.5 and hold(10**6, 2.0) == MAX_TICKS * 2.0


def test_update_counts_consecutive_failures_and_success_clears():
    s = update({}, [A], [], {A, B}, now=10.0, interval=1.0)
    assert s == {A: Strike(1, 12.0)}
    s = update(s, [A], [], {A, B}, now=12.0, interval=1.0)
    assert s == {A: Strike(2, 16.0)}
    s = update(s, [A, B], [], {A, B}, now=16.0, interval=1.0)
    assert s == {A: Strike(3, 24.0), B: Strike(1, 18.0)}
    s = update(s, [], [A], {A, B}, now=24.0, interval=1.0)  # A moved at last
    assert s == {B: Strike(1, 18.0)}


def test_update_forgets_regions_gone_from_the_sample_or_quiet_for_long():
    s = {A: Strike(3, 20.0), B: Strike(2, 20.0)}
    assert update(s, [], [], {B}, now=21.0, interval=1.0) == {B: Strike(2, 20.0)}  # A's process exited
    assert update(s, [], [], {A, B}, now=20.0 + MAX_TICKS - 0.5, interval=1.0) == s
    assert update(s, [], [], {A, B}, now=20.0 + MAX_TICKS, interval=1.0) == {}
    # a failure after the record was forgotten starts over at the first hold
    assert update({}, [A], [], {A}, now=100.0, interval=1.0) == {A: Strike(1, 102.0)}


def test_held_lists_only_regions_still_held():
    s = {A: Strike(1, 12.0), B: Strike(4, 30.0)}
    assert held(s, 11.0) == {A: 12.0, B: 30.0}
    assert held(s, 12.0) == {B: 30.0}


def test_decide_skips_a_held_region():
    pol = build_policy({"rate_limit": {"mb_per_s": 100000}})
    heat = [RegionHeat(1, 0, R, 2, 100.0), RegionHeat(1, R, R, 2, 50.0)]
    state = PlacementState(free_bytes={0: 1000 * R, 2: 900 * R}, total_bytes={0: 1000 * R, 2: 1000 * R})
    assert {m.key for m in decide(TOPO, heat, pol, state, 5.0).moves} == {A, B}
    held_a = PlacementState(state.free_bytes, state.total_bytes, held_until={A: 6.0})
    assert {m.key for m in decide(TOPO, heat, pol, held_a, 5.0).moves} == {B}
    assert {m.key for m in decide(TOPO, heat, pol, held_a, 6.0).moves} == {A, B}  # the hold is over


class Refusing:
    """Tracker and migrator: two hot regions on node 2; region A never moves (the kernel refuses its pages)."""

    name = "refusing"
    kernel_executed = False

    def __init__(self) -> None:
        self.node = {A: 2, B: 2}
        self.tried: list[tuple[float, tuple[tuple[int, int], ...]]] = []

    def configure(self, topology: Topology, policy: object) -> None:
        pass

    def gate(self, gates: object) -> None:
        pass

    def sample(self, now: float) -> Sample:
        regions = tuple(RegionHeat(k[0], k[1], R, n, 100.0) for k, n in self.node.items())
        return Sample(regions=regions, free_bytes={0: 900 * R, 2: 900 * R}, total_bytes={0: 1000 * R, 2: 1000 * R})

    def apply(self, plan: Plan, now: float) -> Outcome:
        self.tried.append((now, tuple(m.key for m in plan.moves)))
        moved = [m for m in plan.moves if m.key != A]
        for m in moved:
            self.node[m.key] = m.dst
        return Outcome(
            transfers=tuple(Transfer(m.src, m.dst, m.size, m.size // 4096) for m in moved),
            failures={"busy": R // 4096} if len(moved) < len(plan.moves) else {},
            moved=tuple(m.key for m in moved),
        )

    def stop(self) -> None:
        pass


def test_loop_holds_back_a_region_whose_moves_fail():
    fake = Refusing()
    doc = {"interval": 1, "rate_limit": {"mb_per_s": 100000}, "hotness": {"half_life": 1}}
    lp = Loop(TOPO, Engines("refusing", fake, fake), build_policy(doc))
    reports = [lp.tick(float(t)) for t in range(0, 40)]
    tries = [t for t, keys in fake.tried if A in keys]
    # tick 1: first try; then held 2, 4, 8, 16 intervals: retried at 3, 7, 15, 31 (not every tick)
    assert tries == [1.0, 3.0, 7.0, 15.0, 31.0]
    assert lp.strikes[A].failures == 5 and lp.strikes[A].until == pytest.approx(31.0 + 32.0)
    assert B not in lp.strikes  # B moved at tick 1
    # the failures still reach the totals (metrics) as before, and the plan says what is held
    assert lp.totals.failures["busy"] == 5 * R // 4096
    assert reports[2].plan.notes[0] == "backoff: 1 regions held after failed moves (for up to 1s)"
    assert not any(n.startswith("backoff") for n in reports[3].plan.notes)  # A's hold ended: planned again
