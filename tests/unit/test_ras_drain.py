"""The drain planner: order (hottest to the fastest tier), room and reserve, rate, running out of room (no OOM),
and resuming from the serialised progress."""

from __future__ import annotations

import json

import pytest

from cxltierd.errors import ConfigError
from cxltierd.ras.drain import DrainProgress, Resident, Target, budget, plan_step, room, start
from cxltierd.ras.policy import MiB, RasPolicy

GiB = 1024 * MiB
# 100 MiB/s, at most 10 s per step: 1000 MiB per step; reserve 64 MiB or 5%, whichever is larger
P = RasPolicy(drain_rate=100 * MiB, max_step=10.0, reserve_bytes=64 * MiB, reserve_percent=5.0)
DDR = Target(node=0, rank=0, free=600 * MiB, total=1 * GiB)  # room 600 - 64 = 536 MiB
SLOW = Target(node=2, rank=1, free=2 * GiB, total=4 * GiB)  # room 2048 - 204.8 MiB


def test_room_is_free_minus_the_larger_reserve():
    assert room(DDR, P) == 536 * MiB
    assert room(SLOW, P) == 2 * GiB - int(4 * GiB * 0.05)
    assert room(Target(1, 0, free=10 * MiB, total=GiB), P) == 0


def test_hottest_go_to_the_fastest_tier_until_its_room_runs_out_then_the_next():
    residents = [Resident("cold", 300 * MiB, heat=0.1), Resident("hot", 400 * MiB, heat=9.0)]
    step = plan_step(start(4, 0.0), residents, [SLOW, DDR], P, now=0.0)
    assert [(m.key, m.src, m.dst, m.size) for m in step.moves] == [
        ("hot", 4, 0, 400 * MiB),
        ("cold", 4, 0, 136 * MiB),  # what is left of node 0's room
        ("cold", 4, 2, 164 * MiB),
    ]
    assert step.remaining == 0 and step.reason == "done" and step.progress.status == "done"
    assert step.progress.moved == 700 * MiB and step.progress.moved_to == {0: 536 * MiB, 2: 164 * MiB}


def test_the_rate_limits_each_step_by_elapsed_time_capped_at_max_step():
    p = start(4, 0.0)
    assert budget(p, 0.0, P) == 1000 * MiB  # first step: max_step
    residents = [Resident("a", 3 * GiB, heat=1.0)]
    big = Target(1, 1, free=8 * GiB, total=16 * GiB)
    first = plan_step(p, residents, [big], P, now=0.0)
    assert sum(m.size for m in first.moves) == 1000 * MiB and first.reason == "rate limit"
    assert first.progress.status == "running" and first.remaining == 3 * GiB - 1000 * MiB
    left = [Resident("a", first.remaining, heat=1.0)]
    second = plan_step(first.progress, left, [big], P, now=2.5)
    assert sum(m.size for m in second.moves) == 250 * MiB
    late = plan_step(second.progress, left, [big], P, now=3600.0)  # a long pause: still max_step's worth
    assert sum(m.size for m in late.moves) == 1000 * MiB
    assert plan_step(late.progress, left, [big], P, now=3000.0).moves == ()  # clock went back: nothing


def test_partial_moves_are_whole_pages():
    odd = RasPolicy(drain_rate=10_000, max_step=1.0, reserve_bytes=0, reserve_percent=0)
    step = plan_step(start(4, 0.0), [Resident("a", 1 << 20)], [Target(0, 0, 1 << 30, 1 << 30)], odd, 0.0)
    assert [m.size for m in step.moves] == [8192]


def test_when_room_runs_out_the_drain_stalls_and_reports_what_is_left():
    residents = [Resident("a", 500 * MiB, heat=2.0), Resident("b", 500 * MiB, heat=1.0)]
    tight = Target(0, 0, free=400 * MiB, total=GiB)  # room 336 MiB
    step = plan_step(start(4, 0.0), residents, [tight], P, now=0.0)
    assert sum(m.size for m in step.moves) == 336 * MiB
    assert step.remaining == 664 * MiB and step.progress.status == "stalled"
    assert step.reason == f"no room: {664 * MiB} bytes left on node 4"
    full = Target(0, 0, free=64 * MiB, total=GiB)  # exactly the reserve: nothing may go there
    again = plan_step(step.progress, [Resident("a", 664 * MiB)], [full], P, now=10.0)
    assert again.moves == () and again.progress.status == "stalled" and again.progress.moved == 336 * MiB


def test_the_failing_node_is_never_a_target_and_targets_never_exceed_room():
    residents = [Resident(f"r{i}", 100 * MiB, heat=float(i)) for i in range(12)]
    targets = [Target(4, 0, 10 * GiB, 10 * GiB), DDR, SLOW]
    step = plan_step(start(4, 0.0), residents, targets, P, now=0.0)
    per = step.progress.moved_to
    assert 4 not in per and per[0] <= room(DDR, P) and per[2] <= room(SLOW, P)
    assert sum(per.values()) == 1000 * MiB  # the rate, not the room, stopped it


def test_resume_from_serialised_progress_continues_as_if_never_stopped():
    residents = [Resident("a", 2500 * MiB, heat=1.0)]
    big = Target(1, 0, 8 * GiB, 16 * GiB)
    first = plan_step(start(4, 100.0), residents, [big], P, now=100.0)
    saved = json.dumps(first.progress.to_dict())
    restored = DrainProgress.from_dict(json.loads(saved), "/var/lib/cxltierd/drain.json")
    assert restored == first.progress
    left = [Resident("a", first.remaining, heat=1.0)]
    resumed = plan_step(restored, left, [big], P, now=105.0)
    uninterrupted = plan_step(first.progress, left, [big], P, now=105.0)
    assert resumed == uninterrupted and resumed.progress.moved == 1500 * MiB
    final = plan_step(resumed.progress, [Resident("a", resumed.remaining)], [big], P, now=115.0)
    assert final.progress.status == "done" and final.progress.moved == 2500 * MiB
    assert final.progress.moved_to == {1: 2500 * MiB} and final.progress.started == 100.0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"started": 1.0}, "drain.json: node: is required"),
        ({"node": -1, "started": 1.0}, "drain.json: node: must be an integer in [0, 4095], got -1"),
        ({"node": 4, "started": 1.0, "status": "paused"}, "drain.json: status: must be one of running, stalled, done"),
        ({"node": 4, "started": 1.0, "moved_to": {"x": 1}}, "drain.json: moved_to.x: must be a node number, got 'x'"),
        ({"node": 4, "started": 1.0, "moved_to": {"1": -5}}, "drain.json: moved_to.1: must be an integer >= 0"),
        ({"node": 4, "started": 1.0, "moved_to": [1]}, "drain.json: moved_to: must be a mapping"),
        ({"node": 4, "started": "x"}, "drain.json: started: must be a number"),
        ("garbage", "drain.json: must be a mapping, got str"),
    ],
)
def test_broken_saved_progress_gives_one_line_errors(doc, message):
    with pytest.raises(ConfigError) as info:
        DrainProgress.from_dict(doc, "drain.json")
    assert message in str(info.value) and "\n" not in str(info.value)
