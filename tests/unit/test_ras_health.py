"""The health model: thresholds, decay, hysteresis, latching, reset, node aggregation, and the captured events."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxltierd.ras.events import RasEvent, parse_lines
from cxltierd.ras.health import (
    MemdevHealth,
    corrected_per_hour,
    device_level,
    observe,
    observe_all,
    reset,
    settle,
)
from cxltierd.ras.nodes import node_states
from cxltierd.ras.policy import RasPolicy

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ras"
HOUR = 3600.0
P = RasPolicy()  # degraded at 10/h, failing at 100/h, half-life 1 h, uncorrectable -> failing


def ev(kind: str, name: str = "cxl_dram", **kw) -> RasEvent:
    return RasEvent(name=name, time=0.0, memdev="mem0", kind=kind, **kw)


def feed(h: MemdevHealth, events, now: float, policy: RasPolicy = P):
    transitions = []
    for e in events:
        h, t = observe(h, e, now, policy)
        if t is not None:
            transitions.append(t)
    return h, transitions


def test_corrected_errors_degrade_at_the_hourly_threshold():
    # 10/h corresponds to a decayed count of 10 / (ln 2) = 14.43 with a 1 h half-life
    h, ts = feed(MemdevHealth("mem0"), [ev("corrected")] * 14, now=100.0)
    assert h.state == "healthy" and ts == []
    assert corrected_per_hour(h, 100.0, P) == pytest.approx(14 * 0.6931, rel=1e-3)
    h, t = observe(h, ev("corrected", dpa=0x3000), 100.0, P)
    assert t is not None and (t.old, t.new, t.time) == ("healthy", "degraded", 100.0)
    assert "10.4 corrected errors/h >= 10/h" in t.cause and t.event is not None and t.event.dpa == 0x3000
    assert str(t).startswith("mem0: healthy -> degraded (")


def test_corrected_rate_decays_with_half_life_and_recovers_below_half_the_threshold():
    h, _ = feed(MemdevHealth("mem0"), [ev("corrected")] * 20, now=0.0)  # 13.9/h: degraded
    assert h.state == "degraded"
    h1, t = settle(h, HOUR, P)  # halved: 6.9/h, above 5/h: hysteresis keeps it degraded
    assert t is None and h1.state == "degraded" and h1.corrected == pytest.approx(10.0)
    h2, t = settle(h1, 2 * HOUR, P)  # 3.5/h
    assert t is not None and (t.old, t.new) == ("degraded", "healthy") and "< 5/h" in t.cause
    assert h2.state == "healthy"


def test_half_life_is_configurable():
    fast = RasPolicy(half_life=60.0)
    h, _ = feed(MemdevHealth("mem0"), [ev("corrected")], now=0.0, policy=fast)
    h, _ = settle(h, 120.0, fast)
    assert h.corrected == pytest.approx(0.25)


def test_a_corrected_rate_that_reaches_failing_latches():
    h, ts = feed(MemdevHealth("mem0"), [ev("corrected")] * 145, now=0.0)  # 100.5/h
    assert h.state == "failing" and [(t.old, t.new) for t in ts] == [("healthy", "degraded"), ("degraded", "failing")]
    later, t = settle(h, 100 * HOUR, P)
    assert later.state == "failing" and t is None and later.corrected < 1e-6


@pytest.mark.parametrize(("setting", "expected"), [("failing", "failing"), ("degraded", "degraded")])
def test_an_uncorrectable_event_moves_to_the_configured_state(setting, expected):
    h, ts = feed(MemdevHealth("mem0"), [ev("uncorrectable", dpa=0x2000)], 5.0, RasPolicy(uncorrectable=setting))
    assert h.state == expected and len(ts) == 1
    assert ts[0].cause == "uncorrectable cxl_dram at dpa 0x2000" and h.cause == ts[0].cause


def test_failing_never_returns_by_itself_only_reset_does():
    h, _ = feed(MemdevHealth("mem0"), [ev("uncorrectable")], 0.0)
    h, t = settle(h, 1000 * HOUR, P)
    assert h.state == "failing" and t is None
    h, t = reset(h, 1000 * HOUR + 1)
    assert (
        h.state == "healthy" and t is not None and (t.old, t.new, t.cause) == ("failing", "healthy", "operator undrain")
    )
    assert reset(h, 0.0)[1] is None


def test_poison_records_count_distinct_dpas_and_clear():
    policy = RasPolicy(poison_degraded=2, poison_failing=3)
    p = [ev("poison", name="cxl_poison", dpa=d, fields={"trace_type": "List"}) for d in (0x40000, 0x40000, 0x80000)]
    h, ts = feed(MemdevHealth("mem0"), p[:2], 0.0, policy)
    assert h.state == "healthy" and h.poison == frozenset({0x40000})
    h, ts = feed(h, p[2:], 1.0, policy)
    assert h.state == "degraded" and ts[0].cause.startswith("2 poison records")
    clear = ev("poison", name="cxl_poison", dpa=0x80000, fields={"trace_type": "Clear"})
    h, ts = feed(h, [clear], 2.0, policy)
    assert h.poison == frozenset({0x40000}) and h.state == "degraded" and ts == []  # latched
    more = [ev("poison", name="cxl_poison", dpa=d, fields={"trace_type": "List"}) for d in (0x1000, 0x2000)]
    h, ts = feed(h, more, 3.0, policy)
    assert h.state == "failing" and ts[0].cause.startswith("3 poison records")


@pytest.mark.parametrize(
    ("health", "level"),
    [
        ({"health_status": "", "media_status": "Normal"}, "healthy"),
        ({"health_status": "MAINTENANCE_NEEDED", "media_status": "Normal"}, "degraded"),
        ({"health_status": "REPLACEMENT_NEEDED", "media_status": "Normal"}, "failing"),
        ({"health_status": "", "media_status": "All Data Loss in Event of Power Loss"}, "degraded"),
        ({"health_status": "", "media_status": "All Data Lost"}, "failing"),
        ({"health_status": "", "media_status": "Not Ready"}, "failing"),
        ({"media_status": "Normal", "as_dev_temp": "Critical"}, "degraded"),
        ({"media_status": "Normal", "as_dev_temp": "Warning"}, "healthy"),
    ],
)
def test_device_health_levels(health, level):
    assert device_level(health)[0] == level


def test_memory_module_counters_add_their_rise_after_the_first_report():
    def module(vol: int) -> RasEvent:
        health = {"cor_vol_err_cnt": vol, "cor_per_err_cnt": 0, "media_status": "Normal"}
        return ev("health", name="cxl_memory_module", health=health)

    h, _ = feed(MemdevHealth("mem0"), [module(100)], 0.0)
    assert h.corrected == 0 and h.cor_counts == (100, 0) and h.state == "healthy"
    h, ts = feed(h, [module(120)], 0.0)
    assert h.corrected == 20 and h.state == "degraded" and "corrected errors/h" in ts[0].cause


def test_device_health_can_be_ignored():
    e = ev("health", name="cxl_memory_module", health={"health_status": "REPLACEMENT_NEEDED"})
    assert feed(MemdevHealth("mem0"), [e], 0.0, RasPolicy(device_health=False))[0].state == "healthy"


def test_overflow_of_the_failure_log_counts_as_uncorrectable_and_of_others_as_corrected():
    fail = ev("overflow", name="cxl_overflow", log="Failure", fields={"count": "3"})
    warn = ev("overflow", name="cxl_overflow", log="Warning", fields={"count": "30"})
    assert feed(MemdevHealth("mem0"), [fail], 0.0)[0].state == "failing"
    h, _ = feed(MemdevHealth("mem0"), [warn], 0.0)
    assert h.corrected == 30 and h.state == "degraded"


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_the_captured_events_make_mem0_failing_on_the_first_uncorrectable_one(kernel):
    events, _ = parse_lines((FIXTURES / f"cxl-events-{kernel}.trace").read_text().splitlines())
    h, ts = feed(MemdevHealth("mem0"), events, 50.0)
    assert h.state == "failing" and len(ts) == 1
    assert ts[0].cause == "uncorrectable cxl_general_media at dpa 0x1000" and ts[0].event is events[0]
    assert h.poison == frozenset({0x40000}) and h.cor_counts == (100, 0)
    lenient = RasPolicy(uncorrectable="degraded", poison_degraded=5)
    h, ts = feed(MemdevHealth("mem0"), events[2:], 50.0, lenient)  # module event only (+ one poison record)
    assert h.state == "degraded" and ts[0].cause.startswith("device health: health_status MAINTENANCE_NEEDED")


def test_a_node_takes_the_worst_of_its_memdevs():
    states = {
        "mem0": MemdevHealth("mem0", state="degraded"),
        "mem1": MemdevHealth("mem1", state="failing"),
        "mem2": MemdevHealth("mem2"),
    }
    nodes = node_states(states, {"mem0": [4], "mem1": [4, 5], "mem2": [5], "mem3": [6]})
    assert {n: (s.state, s.memdevs) for n, s in nodes.items()} == {
        4: ("failing", ("mem1",)),
        5: ("failing", ("mem1",)),
        6: ("healthy", ("mem3",)),  # a memdev with no state yet is healthy
    }
    assert node_states({}, {}) == {}


def test_observe_all_routes_events_to_their_memdevs():
    events = [
        RasEvent("cxl_dram", 1.0, "mem1", "uncorrectable", dpa=0x10),
        RasEvent("cxl_dram", 2.0, "mem0", "corrected"),
        RasEvent("cxl_poison", 3.0, None, "poison"),  # no memdev: ignored
    ]
    before = {"mem0": MemdevHealth("mem0", corrected=5.0, as_of=9.0)}
    states, ts = observe_all(before, events, 9.0, P)
    assert set(states) == {"mem0", "mem1"} and states["mem0"].corrected == 6.0
    assert [(t.memdev, t.new) for t in ts] == [("mem1", "failing")]
    assert before["mem0"].corrected == 5.0  # the input is not changed
