"""The health state's JSON form: a round trip keeps every field, and a broken file gives one-line errors."""

from __future__ import annotations

import json

import pytest

from cxltierd.errors import ConfigError
from cxltierd.ras.events import RasEvent
from cxltierd.ras.health import MemdevHealth, observe, settle
from cxltierd.ras.policy import RasPolicy
from cxltierd.ras.store import dump, load


def test_round_trip_keeps_a_failing_memdev_failing_after_restart():
    p = RasPolicy()
    h, _ = observe(MemdevHealth("mem0"), RasEvent("cxl_dram", 1.0, "mem0", "uncorrectable", dpa=0x2000), 10.0, p)
    h, _ = observe(h, RasEvent("cxl_poison", 2.0, "mem0", "poison", dpa=0x40000), 11.0, p)
    h, _ = observe(h, RasEvent("cxl_dram", 3.0, "mem0", "corrected"), 12.0, p)
    states = {"mem0": h, "mem1": MemdevHealth("mem1", cor_counts=(100, 2))}
    back = load(json.loads(json.dumps(dump(states))), "health.json")
    assert back == states
    assert back["mem0"].state == "failing" and back["mem0"].poison == frozenset({0x40000})
    assert settle(back["mem0"], 1e6, p)[0].state == "failing"
    assert load(None, "health.json") == {}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1], "health.json: must be a mapping of memdev names, got list"),
        ({"mem0": {"state": "sick"}}, "health.json: mem0.state: must be one of healthy, degraded, failing, got 'sick'"),
        ({"mem0": {"poison": [1, -2]}}, "health.json: mem0.poison[1]: must be an integer >= 0, got -2"),
        ({"mem0": {"cor_counts": [1]}}, "health.json: mem0.cor_counts: must be a list of two counts, got [1]"),
        ({"mem0": {"corrected": "x"}}, "health.json: mem0.corrected: must be a number >= 0"),
        ({"mem0": {"stat": "failing"}}, "health.json: mem0.stat: unknown key 'stat' (did you mean 'state'?)"),
        ({"": {}}, "health.json: memdev name must be a non-empty string"),
    ],
)
def test_broken_state_gives_one_line_errors(doc, message):
    with pytest.raises(ConfigError) as info:
        load(doc, "health.json")
    assert message in str(info.value) and "\n" not in str(info.value)
