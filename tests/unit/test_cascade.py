"""Three or more tiers: decide cascades pair by adjacent pair (hottest to the fastest, warm to the middle, cold to
the slowest), skips a tier only on strong evidence, and keeps the two roles when the policy names fast/slow."""

from __future__ import annotations

import pytest

from cxltierd.errors import ConfigError
from cxltierd.model import RegionHeat
from cxltierd.policy.cascade import cascade_tiers
from cxltierd.policy.decide import PlacementState, decide
from cxltierd.policy.schema import build_policy, parse_policy
from cxltierd.topology import Node, Tier, Topology

MiB = 1 << 20
R = 2 * MiB
KINDS = {0: "ddr", 1: "cxl", 2: "cxl-far"}
TOPO = Topology(
    nodes=tuple(Node(node=n, kind=k, reason="test", total_bytes=100 * R) for n, k in KINDS.items()),
    tiers=tuple(Tier(name=k, rank=n, nodes=(n,)) for n, k in KINDS.items()),
)


def region(i: int, node: int, heat: float) -> RegionHeat:
    return RegionHeat(pid=100, start=0x7F0000000000 + i * R, size=R, node=node, accesses=heat)


def state(used: dict[int, int]) -> PlacementState:
    return PlacementState(
        free_bytes={n: (100 - u) * R for n, u in used.items()}, total_bytes={n: 100 * R for n in used}
    )


def policy(**doc):
    base = {"rate_limit": {"mb_per_s": 10000}, "interval": 1, "hotness": {"hot_threshold": 1, "hysteresis": 0.5}}
    return build_policy({**base, **doc})


def test_warm_climbs_one_tier_hot_middle_climbs_to_the_fastest():
    heat = [region(0, 1, 100.0), region(1, 2, 150.0)]  # far region hotter, but not STRONG x the middle's hottest
    plan = decide(TOPO, heat, policy(), state({0: 50, 1: 50, 2: 50}), now=0)
    assert {(m.start, m.src, m.dst) for m in plan.moves} == {(heat[0].start, 1, 0), (heat[1].start, 2, 1)}


def test_strong_evidence_skips_the_middle_tier():
    heat = [region(0, 1, 10.0), region(1, 2, 500.0)]  # 50x the middle tier's hottest
    plan = decide(TOPO, heat, policy(), state({0: 50, 1: 50, 2: 50}), now=0)
    assert {(m.start, m.src, m.dst) for m in plan.moves} == {(heat[1].start, 2, 0), (heat[0].start, 1, 0)}


def test_pressure_sinks_one_tier_at_a_time_and_each_region_moves_once():
    # DDR and CXL both under pressure (98 of 100 used, min_free 5%): DDR's coldest go to CXL, CXL's to CXL-far.
    heat = [region(i, 0, 50.0 + i) for i in range(98)] + [region(100 + i, 1, 5.0 + i) for i in range(98)]
    plan = decide(TOPO, heat, policy(), state({0: 98, 1: 98, 2: 10}), now=0)
    down01 = [m for m in plan.moves if (m.src, m.dst) == (0, 1)]
    down12 = [m for m in plan.moves if (m.src, m.dst) == (1, 2)]
    assert len(down01) >= 8 and len(down12) >= 8  # back under max_used 90% (and exchanges with CXL's hottest)
    assert {heat[i].start for i in range(8)} <= {m.start for m in down01}  # DDR's coldest
    assert not [m for m in plan.moves if (m.src, m.dst) in ((0, 2), (2, 0))]  # adjacent tiers only
    assert len({m.key for m in plan.moves}) == len(plan.moves)
    assert not {m.key for m in down01} & {m.key for m in down12}


def test_budget_is_shared_across_the_pairs():
    heat = [region(i, 1, 100.0) for i in range(10)] + [region(20 + i, 2, 90.0) for i in range(10)]
    plan = decide(TOPO, heat, policy(rate_limit={"mb_per_s": 12}), state({0: 10, 1: 50, 2: 50}), now=0)
    assert sum(m.size for m in plan.moves) <= 12 * MiB and len(plan.moves) == 6


def test_fast_slow_roles_keep_the_two_role_decision():
    heat = [region(0, 2, 150.0)]
    plan = decide(TOPO, heat, policy(tiers={"fast": ["ddr"]}), state({0: 50, 1: 50, 2: 50}), now=0)
    assert [(m.src, m.dst) for m in plan.moves] == [(2, 0)]


def test_order_key_picks_and_orders_the_tiers():
    p = parse_policy("tiers: {order: [ddr, cxl-far]}")
    assert cascade_tiers(TOPO, p, {0, 1, 2}) == [(0,), (2,)]
    assert cascade_tiers(TOPO, build_policy({}), {0, 2}) == [(0,), (2,)]  # a tier with no live node drops out
    with pytest.raises(ConfigError, match=r"tiers\.order: cannot be combined"):
        parse_policy("tiers: {order: [ddr, cxl], fast: [ddr]}")
    with pytest.raises(ConfigError, match=r"tiers\.order: lists a tier twice"):
        parse_policy("tiers: {order: [ddr, ddr]}")


def test_an_unknown_tier_keeps_the_two_roles_unless_the_order_names_it():
    kinds = {0: "ddr", 2: "unknown", 4: "cxl"}  # the lab: DDR, a CPU-less RAM node nothing classifies, CXL
    topo = Topology(
        nodes=tuple(Node(node=n, kind=k, reason="test", total_bytes=100 * R) for n, k in kinds.items()),
        tiers=tuple(Tier(name=k, rank=i, nodes=(n,)) for i, (n, k) in enumerate(kinds.items())),
    )
    assert cascade_tiers(topo, build_policy({}), {0, 2, 4}) == []
    ordered = parse_policy("tiers: {order: [ddr, unknown, cxl]}")
    assert cascade_tiers(topo, ordered, {0, 2, 4}) == [(0,), (2,), (4,)]


def test_strong_region_the_fastest_tier_has_no_room_for_climbs_one_tier():
    # The middle tier holds nothing tracked, so both far regions count as strong evidence; the fastest tier has room
    # for one region: the hotter skips to it, the other still climbs into the middle tier (it is not stuck below).
    heat = [region(0, 2, 500.0), region(1, 2, 100.0), region(2, 2, 0.0)]
    plan = decide(TOPO, heat, policy(), state({0: 89, 1: 50, 2: 50}), now=0)
    assert {(m.start, m.src, m.dst) for m in plan.moves} == {(heat[0].start, 2, 0), (heat[1].start, 2, 1)}


def test_the_oracle_sorts_every_tier_by_next_intervals_rates():
    """The oracle baseline on three tiers: what will be hottest goes up (one tier, or two on strong evidence),
    whatever the sampled heat says; on two roles it fills the fast tier only."""
    from cxltierd.emulate.baselines import oracle

    heat = [region(0, 1, 0.0), region(1, 2, 0.0), region(2, 0, 0.0)]
    future = {heat[0].key: 100.0, heat[1].key: 150.0, heat[2].key: 0.0}  # the sampled heat (all 0) is ignored
    plan = oracle(lambda t0, t1: future)(TOPO, heat, policy(), state({0: 50, 1: 50, 2: 50}), 0.0)
    assert {(m.start, m.src, m.dst) for m in plan.moves} == {(heat[0].start, 1, 0), (heat[1].start, 2, 1)}
    two = policy(tiers={"fast": ["ddr"], "slow": ["cxl", "cxl-far"]})
    plan = oracle(lambda t0, t1: future)(TOPO, heat, two, state({0: 50, 1: 50, 2: 50}), 0.0)
    assert {(m.start, m.src, m.dst) for m in plan.moves} == {(heat[0].start, 1, 0), (heat[1].start, 2, 0)}
