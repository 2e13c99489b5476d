"""The loop: observe first, smooth heat, apply in batches (abandoned on stop), dry run, kernel-executed engines,
ping-pong accounting, and outcome recording per tier pair."""

from __future__ import annotations

import pytest

from cxltierd.engines.base import Engines
from cxltierd.errors import CxltierdError
from cxltierd.loop import BATCH_BYTES, Loop, merge
from cxltierd.model import Gates, Move, Outcome, Plan, RegionHeat, Sample, Transfer
from cxltierd.policy.schema import build_policy
from cxltierd.topology import Node, Tier, Topology

MiB = 1 << 20
R = 2 * MiB
TOPO = Topology(
    nodes=(Node(0, "ddr", "t", total_bytes=1000 * R), Node(2, "cxl", "t", total_bytes=1000 * R)),
    tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (2,))),
)


class Fake:
    """Tracker and migrator: regions with scripted heat; applies moves and records each apply call."""

    name = "fake"
    kernel_executed = False

    def __init__(self, heat: dict[int, float], node: int = 2, fail_configure: bool = False) -> None:
        self.heat = heat
        self.node = dict.fromkeys(heat, node)
        self.calls: list[Plan] = []
        self.gates: list[Gates] = []
        self.configured = 0
        self.stopped = 0
        self.fail_configure = fail_configure

    def configure(self, topology, policy) -> None:
        if self.fail_configure and self.configured:
            raise CxltierdError("fake: cannot follow")
        self.configured += 1

    def gate(self, gates: Gates) -> None:
        self.gates.append(gates)

    def sample(self, now: float) -> Sample:
        regions = tuple(RegionHeat(1, i * R, R, self.node[i], h) for i, h in self.heat.items())
        used = {n: sum(R for i in self.node if self.node[i] == n) for n in (0, 2)}
        return Sample(
            regions=regions,
            free_bytes={n: 1000 * R - u for n, u in used.items()},
            total_bytes={0: 1000 * R, 2: 1000 * R},
        )

    def apply(self, plan: Plan, now: float) -> Outcome:
        self.calls.append(plan)
        for m in plan.moves:
            self.node[m.start // R] = m.dst
        pairs: dict[tuple[int, int], int] = {}
        for m in plan.moves:
            pairs[(m.src, m.dst)] = pairs.get((m.src, m.dst), 0) + m.size
        return Outcome(
            transfers=tuple(Transfer(s, d, b, b // 4096) for (s, d), b in pairs.items()),
            moved=tuple(m.key for m in plan.moves),
        )

    def stop(self) -> None:
        self.stopped += 1


def loop(fake: Fake, **policy) -> Loop:
    doc = {"interval": 1, "rate_limit": {"mb_per_s": 100000}, "hotness": {"half_life": 1}, **policy}
    return Loop(TOPO, Engines("fake", fake, fake), build_policy(doc))


def test_first_tick_observes_only_then_promotes():
    fake = Fake({i: 100.0 for i in range(4)})
    lp = loop(fake)
    first = lp.tick(0.0)
    assert first.plan.moves == () and "first sample" in first.plan.notes[0] and fake.calls == []
    second = lp.tick(1.0)
    assert len(second.plan.moves) == 4 and second.moved_bytes == 4 * R
    assert (
        lp.totals.migrated_bytes[("cxl", "ddr")] == 4 * R and lp.totals.migrated_pages[("cxl", "ddr")] == 4 * R // 4096
    )
    assert fake.configured == 1  # one object as tracker and migrator: configured once


def test_heat_is_smoothed_with_the_half_life():
    fake = Fake({0: 0.0})
    lp = loop(fake, hotness={"half_life": 2})
    lp.tick(0.0)
    fake.heat[0] = 100.0
    lp.tick(2.0)  # one half-life later: half old (0), half new (100)
    assert lp.heat[(1, 0)] == pytest.approx(50.0)
    lp.tick(2.0)  # a repeated sample at the same time changes nothing
    assert lp.heat[(1, 0)] == pytest.approx(50.0)


def test_plan_is_applied_in_batches_and_stop_abandons_the_rest():
    n = 3 * BATCH_BYTES // R
    fake = Fake({i: 100.0 for i in range(n)})
    lp = loop(fake)
    lp.tick(0.0)
    calls = iter([False, True])
    report = lp.tick(1.0, stop=lambda: next(calls))
    assert len(fake.calls) == 1 and sum(m.size for m in fake.calls[0].moves) == BATCH_BYTES
    assert report.outcome.errors == (f"stopping: abandoned {n - BATCH_BYTES // R} planned moves",)


def test_dry_run_plans_but_never_applies():
    fake = Fake({i: 100.0 for i in range(4)})
    lp = loop(fake, dry_run=True)
    lp.tick(0.0)
    r = lp.tick(1.0)
    assert len(r.plan.moves) == 4 and r.dry_run and fake.calls == [] and r.moved_bytes == 0


def test_kernel_executed_engine_reports_what_the_kernel_did():
    fake = Fake({i: 100.0 for i in range(4)})
    fake.kernel_executed = True  # type: ignore[attr-defined]
    lp = loop(fake)
    r = lp.tick(0.0)
    assert r.plan.moves == () and "the kernel moves memory" in r.plan.notes[0] and len(fake.calls) == 1
    assert r.gates == Gates(promote=True, demote=False) and fake.gates == [r.gates]
    fake.node = dict.fromkeys(range(990), 0)  # node 0 99% used: past max_used_percent
    assert lp.tick(1.0).gates == Gates(promote=False, demote=True) == fake.gates[-1]


def test_swap_is_all_or_nothing_and_stops_replaced_engines():
    fake = Fake({0: 1.0}, fail_configure=True)
    lp = loop(fake)
    lp.start()
    old_policy = lp.policy
    with pytest.raises(CxltierdError):
        lp.swap(policy=build_policy({"interval": 7}), topology=TOPO)
    assert lp.policy is old_policy and lp.engines.tracker is fake  # nothing changed
    other = Fake({0: 1.0})
    lp.swap(engines=Engines("other", other, other), policy=build_policy({"interval": 7}))
    assert lp.engines.name == "other" and lp.policy.interval == 7 and other.configured == 1 and fake.stopped == 1
    broken = Fake({0: 1.0})
    broken.configure = lambda topology, policy: (_ for _ in ()).throw(CxltierdError("no"))  # type: ignore[method-assign]
    with pytest.raises(CxltierdError):
        lp.swap(engines=Engines("broken", broken, broken))
    assert lp.engines.name == "other" and broken.stopped == 1 and other.stopped == 0
    # new facts alone (a re-discovery that found the same topology) reprogram nothing
    from cxltierd.facts import HostFacts

    lp.swap(facts=HostFacts(root="/"))
    assert other.configured == 1 and lp.facts == HostFacts(root="/")


def test_ping_pong_is_counted_when_a_region_goes_back_within_two_cooldowns():
    fake = Fake({0: 100.0, 1: 100.0})
    lp = loop(fake, cooldown=5)
    lp.tick(0.0)
    lp.tick(1.0)  # both promoted
    fake.heat = {0: 0.0, 1: 0.0}
    fake.calls.clear()
    for t in range(2, 9):
        lp.tick(float(t))
    assert lp.totals.ping_pong == 0  # cold but room left: nothing is demoted
    # a pressure demotion 7 s after the promotion (cooldown 5, window 10) is a ping-pong
    moved = Move(1, 0, R, 0, 2, "demote")
    lp._record(Plan(moves=(moved,)), Outcome(moved=(moved.key,)), 8.0)
    assert lp.totals.ping_pong == 1


def test_merge_sums_transfers_and_failures():
    a = Outcome(transfers=(Transfer(2, 0, R, 512),), failures={"busy": 3}, seconds=1.0, moved=((1, 0),))
    b = Outcome(
        transfers=(Transfer(2, 0, R, 512), Transfer(0, 2, R, 512)), failures={"busy": 1, "other": 2}, errors=("x",)
    )
    m = merge([a, b])
    assert {(t.src, t.dst): (t.bytes, t.pages) for t in m.transfers} == {(2, 0): (2 * R, 1024), (0, 2): (R, 512)}
    assert m.failures == {"busy": 4, "other": 2} and m.moved == ((1, 0),) and m.errors == ("x",)
    assert m.seconds == pytest.approx(1.0)


def test_process_bytes_only_when_the_policy_allows_process_labels():
    fake = Fake({0: 1.0, 1: 1.0})
    assert loop(fake).tick(0.0).process_bytes == {}
    report = loop(fake, metrics={"process_labels": True}).tick(0.0)
    assert report.process_bytes == {(1, "", "cxl"): 2 * R}


class Cached(Fake):
    """Node 0 nearly out of free pages, most of its used memory page cache: free 2%, available 60%."""

    def sample(self, now: float) -> Sample:
        s = super().sample(now)
        free = {**s.free_bytes, 0: 20 * R}
        return Sample(s.regions, free, s.total_bytes, available_bytes={0: 600 * R, 2: s.free_bytes[2]})


def test_decide_and_gates_see_available_memory_not_memfree():
    fake = Cached({i: 0.0 for i in range(10)}, node=0)  # cold regions on node 0: what pressure would demote
    lp = loop(fake)
    lp.tick(0.0)
    r = lp.tick(1.0)
    assert not any(m.src == 0 for m in r.plan.moves)  # page cache is room: no pressure on node 0
    assert r.usage[0] == (1000 * R, 20 * R) and r.available[0] == 600 * R  # both figures reported
    # the same sample without the available figure: MemFree says node 0 is under pressure
    plain = Fake({i: 0.0 for i in range(10)}, node=0)
    plain.sample = lambda now: Sample(  # type: ignore[method-assign]
        tuple(RegionHeat(1, i * R, R, 0, 0.0) for i in range(10)), {0: 20 * R, 2: 1000 * R}, {0: 1000 * R, 2: 1000 * R}
    )
    lp = loop(plain)
    lp.tick(0.0)
    assert {(m.src, m.dst) for m in lp.tick(1.0).plan.moves} == {(0, 2)}
    # a kernel-executed engine is gated on the available figure too: 40% used, promotion stays on
    fake = Cached({}, node=0)
    fake.kernel_executed = True  # type: ignore[attr-defined]
    assert loop(fake).tick(0.0).gates == Gates(promote=True, demote=False)
