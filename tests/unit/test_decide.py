"""The pure decision function: watermarks, rate limit, cooldown, pinning, exclusion, empty/full tiers, lost nodes."""

from __future__ import annotations

from cxltierd.model import Process, RegionHeat
from cxltierd.policy.decide import PlacementState, decide
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import build_policy
from cxltierd.topology import Hmat, Node, Tier, Topology

MiB = 1 << 20
R = 2 * MiB


def topo(*nodes: tuple[int, str]) -> Topology:
    ns = tuple(Node(node=n, kind=k, reason="test", total_bytes=100 * R) for n, k in nodes)
    order = [k for k in ("hbm", "ddr", "cxl", "pmem") if any(n.kind == k for n in ns)]
    tiers = tuple(Tier(name=k, rank=i, nodes=tuple(n.node for n in ns if n.kind == k)) for i, k in enumerate(order))
    return Topology(nodes=ns, tiers=tiers)


TOPO = topo((0, "ddr"), (2, "cxl"))


def region(i: int, node: int, heat: float, pid: int = 100) -> RegionHeat:
    return RegionHeat(pid=pid, start=0x7F0000000000 + i * R, size=R, node=node, accesses=heat)


def state(used: dict[int, int], **kw) -> PlacementState:
    """used: node -> regions' worth of used memory (capacity 100 regions per node)."""
    return PlacementState(
        free_bytes={n: (100 - u) * R for n, u in used.items()},
        total_bytes={n: 100 * R for n in used},
        **kw,
    )


def policy(**doc):
    base = {"rate_limit": {"mb_per_s": 10000}, "interval": 1, "hotness": {"hot_threshold": 1, "hysteresis": 0.5}}
    base.update(doc)
    return build_policy(base)


def test_promotes_hottest_into_room_with_reason():
    heat = [region(i, 2, heat=float(i)) for i in range(10)]
    plan = decide(TOPO, heat, policy(), state({0: 50, 2: 10}), now=0)
    assert [m.start for m in plan.moves] == [
        r.start for r in sorted(heat, key=lambda r: -r.accesses) if r.accesses >= 1
    ]
    assert all(m.src == 2 and m.dst == 0 for m in plan.moves)
    assert plan.moves[0].reason == "promote: 9 acc/s on cxl node 2, room on ddr node 0"


def test_promotion_stops_at_max_used_mark():
    heat = [region(i, 2, heat=100.0) for i in range(20)]
    # 85 of 100 used, max_used 90% -> room for exactly 5 regions
    plan = decide(TOPO, heat, policy(), state({0: 85, 2: 20}), now=0)
    assert len(plan.moves) == 5
    assert any("fast tier full" in n or "hysteresis" in n or "moved recently" in n for n in plan.notes)


def test_exchange_needs_hysteresis_margin():
    fast = [region(100 + i, 0, heat=10.0) for i in range(90)]
    hot = [region(i, 2, heat=14.0) for i in range(3)]  # 14 < 10 * 1.5: no exchange
    plan = decide(TOPO, fast + hot, policy(), state({0: 90, 2: 10}), now=0)
    assert plan.moves == ()
    hotter = [region(i, 2, heat=16.0) for i in range(3)]  # 16 > 15: exchange
    plan = decide(TOPO, fast + hotter, policy(), state({0: 90, 2: 10}), now=0)
    demotes = [m for m in plan.moves if m.dst == 2]
    promotes = [m for m in plan.moves if m.dst == 0]
    assert len(demotes) == len(promotes) == 3
    assert plan.moves[0].dst == 2 and plan.moves[1].dst == 0  # room is made before the promotion
    assert "> coldest fast region 10 acc/s" in promotes[0].reason


def test_rate_limit_caps_bytes_per_interval():
    heat = [region(i, 2, heat=50.0) for i in range(20)]
    pol = policy(rate_limit={"mb_per_s": 10}, interval=1)  # 10 MiB per tick = 5 regions
    plan = decide(TOPO, heat, pol, state({0: 10, 2: 20}), now=0)
    assert sum(m.size for m in plan.moves) == 10 * MiB
    assert "rate limit reached" in plan.notes
    pol = policy(rate_limit={"mb_per_s": 100, "mb_per_interval": 4}, interval=1)
    assert len(decide(TOPO, heat, pol, state({0: 10, 2: 20}), now=0).moves) == 2


def test_cooldown_blocks_recently_moved_regions():
    heat = [region(i, 2, heat=50.0) for i in range(4)]
    moved = {heat[0].key: 95.0, heat[1].key: 50.0}
    plan = decide(TOPO, heat, policy(cooldown=30), state({0: 10, 2: 20}, last_moved=moved), now=100.0)
    starts = {m.start for m in plan.moves}
    assert heat[0].start not in starts  # moved 5 s ago
    assert heat[1].start in starts  # moved 50 s ago
    assert len(starts) == 3


def test_pressure_demotes_coldest_down_to_max_used():
    fast = [region(i, 0, heat=float(i)) for i in range(98)]
    plan = decide(TOPO, fast, policy(), state({0: 98, 2: 10}), now=0)  # 2% free < 5%
    assert [m.start for m in plan.moves] == [fast[i].start for i in range(8)]  # back to 90 used
    assert all(m.dst == 2 and m.reason.startswith("demote: ddr node 0 has 2.0% free") for m in plan.moves)


def test_no_pressure_above_min_free():
    fast = [region(i, 0, heat=0.0) for i in range(94)]
    assert decide(TOPO, fast, policy(), state({0: 94, 2: 10}), now=0).moves == ()


def test_pinned_process_moves_to_its_tier_and_stays():
    procs = {7: Process(7, "redis-server"), 100: Process(100, "python3")}
    pol = policy(processes={"pin": [{"name": "redis-server", "tier": "cxl"}]})
    heat = [region(0, 0, heat=500.0, pid=7), region(1, 2, heat=500.0, pid=7), region(2, 2, heat=5.0)]
    plan = decide(TOPO, heat, pol, state({0: 10, 2: 10}, processes=procs), now=0)
    by_start = {m.start: m for m in plan.moves}
    assert by_start[heat[0].start].dst == 2 and by_start[heat[0].start].reason.startswith("pin: pid 7 (redis-server)")
    assert heat[1].start not in by_start  # hot, but pinned to cxl
    assert by_start[heat[2].start].dst == 0


def test_excluded_and_unmanaged_processes_are_untouched():
    procs = {1: Process(1, "sshd", cgroup="/system.slice/ssh.service"), 2: Process(2, "vllm", "vllm serve m")}
    heat = [region(0, 2, 90.0, pid=1), region(1, 2, 90.0, pid=2)]
    pol = policy(processes={"exclude": [{"cgroup": "/system.slice"}]})
    plan = decide(TOPO, heat, pol, state({0: 10, 2: 10}, processes=procs), now=0)
    assert [m.pid for m in plan.moves] == [2]
    pol = policy(processes={"manage": [{"regex": "serve"}]})
    plan = decide(TOPO, heat, pol, state({0: 10, 2: 10}, processes=procs), now=0)
    assert [m.pid for m in plan.moves] == [2]


def test_empty_and_single_tier():
    assert decide(TOPO, [], policy(), state({0: 10, 2: 10}), now=0).moves == ()
    single = topo((0, "ddr"))
    plan = decide(single, [region(0, 0, 9.0)], policy(), state({0: 10}), now=0)
    assert plan.moves == () and "one tier only" in plan.notes[0]


def test_full_fast_tier_of_hot_regions_moves_nothing():
    fast = [region(100 + i, 0, heat=1000.0) for i in range(90)]
    slow = [region(i, 2, heat=999.0) for i in range(10)]
    assert decide(TOPO, fast + slow, policy(), state({0: 90, 2: 10}), now=0).moves == ()


def test_full_slow_tier_blocks_exchange():
    fast = [region(100 + i, 0, heat=0.0) for i in range(90)]
    slow = [region(i, 2, heat=99.0) for i in range(3)]
    plan = decide(TOPO, fast + slow, policy(), state({0: 90, 2: 95}), now=0)
    assert plan.moves == () and any("slow tiers full" in n for n in plan.notes)


def test_lost_node_is_neither_source_nor_target():
    three = topo((0, "ddr"), (2, "cxl"), (3, "cxl"))
    heat = [region(0, 3, 50.0), region(1, 2, 40.0)]
    # node 3 unplugged: absent from the state
    plan = decide(three, heat, policy(), state({0: 10, 2: 10}), now=0)
    assert [m.src for m in plan.moves] == [2]
    fast = [region(10 + i, 0, 0.0) for i in range(98)]
    plan = decide(three, fast, policy(), state({0: 98, 2: 10}), now=0)
    assert plan.moves and all(m.dst == 2 for m in plan.moves)


def test_noise_floor_scales_with_tracker_resolution():
    """With one sampled access worth 100 acc/s, 250 acc/s is noise: no promotion, no exchange on it."""
    slow = [region(i, 2, heat=250.0) for i in range(3)]
    assert len(decide(TOPO, slow, policy(), state({0: 10, 2: 10}), now=0).moves) == 3
    noisy = PlacementState(free_bytes={0: 90 * R, 2: 90 * R}, total_bytes={0: 100 * R, 2: 100 * R}, resolution=100.0)
    assert decide(TOPO, slow, policy(), noisy, now=0).moves == ()
    fast = [region(100 + i, 0, heat=100.0) for i in range(90)]
    hot = [region(i, 2, heat=380.0) for i in range(3)]  # 3.8x hotter, but only 280 acc/s = 2.8 samples more
    full = PlacementState(free_bytes={0: 10 * R, 2: 90 * R}, total_bytes={0: 100 * R, 2: 100 * R}, resolution=100.0)
    assert decide(TOPO, fast + hot, policy(), full, now=0).moves == ()
    hotter = [region(i, 2, heat=450.0) for i in range(3)]
    assert len(decide(TOPO, fast + hotter, policy(), full, now=0).moves) == 6


def test_roles_from_policy_lists_and_defaults():
    xeon = topo((0, "ddr"), (1, "ddr"), (2, "hbm"), (4, "cxl"))
    r = roles(xeon, build_policy(None))
    assert r.fast == (2,) and r.slow == (0, 1, 4)
    r = roles(xeon, build_policy({"tiers": {"fast": ["hbm", "ddr"]}}))
    assert r.fast == (2, 0, 1) and r.slow == (4,)
    r = roles(xeon, build_policy({"tiers": {"fast": [0], "slow": ["cxl"]}}))
    assert r.fast == (0,) and r.slow == (4,)
    # the fastest tier is gone: the next one becomes fast
    assert roles(xeon, build_policy(None), live={0, 1, 4}).fast == (0, 1)


def test_slow_nodes_of_one_tier_fastest_first():
    """Two CXL nodes, the one behind a switch (node 2) slower than the direct-attached one (node 3): demotion goes
    to node 3 first, then node 2 once 3 is at its mark; nodes without HMAT figures come last."""
    far, near = Hmat(380, 380, 24000, 24000), Hmat(250, 250, 30000, 30000)
    nodes = (
        Node(0, "ddr", "t", total_bytes=100 * R),
        Node(2, "cxl", "t", total_bytes=100 * R, hmat=far),
        Node(3, "cxl", "t", total_bytes=100 * R, hmat=near),
        Node(1, "cxl", "t", total_bytes=100 * R),
    )
    two = Topology(nodes=nodes, tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (1, 2, 3))))
    assert roles(two, build_policy(None)).slow == (3, 2, 1)
    cold = [region(i, 0, heat=0.5) for i in range(10)]
    plan = decide(two, cold, policy(), state({0: 98, 1: 0, 2: 0, 3: 85}), now=0)
    # node 0 sheds 8 regions down to 90%; node 3 (near) takes 5 up to its 90% mark, node 2 (far) the rest
    assert [m.dst for m in plan.moves] == [3] * 5 + [2] * 3


def test_exchange_margin_scales_with_sampling_noise():
    """5 s ticks, 3 s half-life, one sampled access = 20 acc/s: two regions near 77 acc/s differ by noise only."""
    pol = policy(interval=5, hotness={"hot_threshold": 1, "half_life": 3, "hysteresis": 0.25, "min_samples": 3})
    full = PlacementState(free_bytes={0: 10 * R, 2: 90 * R}, total_bytes={0: 100 * R, 2: 100 * R}, resolution=20.0)
    fast = [region(100 + i, 0, heat=70.0) for i in range(90)]
    noisy = [region(i, 2, heat=150.0) for i in range(3)]  # 2.1x hotter and 80 acc/s above the 60 acc/s floor: noise
    assert decide(TOPO, fast + noisy, pol, full, now=0).moves == ()
    hot = [region(i, 2, heat=400.0) for i in range(3)]  # well outside the noise
    assert len(decide(TOPO, fast + hot, pol, full, now=0).moves) == 6


def test_default_rate_limit_exchanges_half_a_gib_within_one_second_tick():
    """After a hot-set shift the fast tier is full, so every promotion is an exchange that spends the budget twice: the
    default budget (1 GiB/s, both directions) swaps a new 512 MiB hot set in within one 1 s tick (issue 17)."""
    big = Topology(
        nodes=(Node(0, "ddr", "test", total_bytes=1000 * R), Node(2, "cxl", "test", total_bytes=2000 * R)),
        tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (2,))),
    )
    cold = [region(1000 + i, 0, heat=10.0) for i in range(900)]  # DDR at its 90% mark, all of it cooled down
    hot = [region(i, 2, heat=1000.0) for i in range(256)]  # the new hot set, 512 MiB on CXL
    st = PlacementState(free_bytes={0: 100 * R, 2: 1000 * R}, total_bytes={0: 1000 * R, 2: 2000 * R})
    plan = decide(big, cold + hot, build_policy({"interval": 1}), st, now=0)
    assert {m.start for m in plan.moves if m.dst == 0} == {r.start for r in hot}
    assert sum(m.size for m in plan.moves) == 1024 * MiB
