"""The `ras:` policy section: defaults, every key read, and one-line errors naming the file and key path."""

from __future__ import annotations

import pytest

from cxltierd.errors import ConfigError
from cxltierd.ras.policy import MiB, RasPolicy
from cxltierd.validate import parse_yaml

FULL = """
corrected_per_hour: {degraded: 5, failing: 50}
half_life: 30m
uncorrectable: degraded
poison_records: {degraded: 2, failing: 4}
device_health: false
poison_poll: 2m
drain:
  rate: 64MiB
  reserve: 1GiB
  reserve_percent: 10
  max_step: 5s
  offline: true
"""


def test_absent_section_is_the_defaults():
    assert RasPolicy.from_mapping(None, "policy.yaml") == RasPolicy()
    assert RasPolicy.from_mapping({}, "policy.yaml") == RasPolicy()


def test_every_key_is_read():
    p = RasPolicy.from_mapping(parse_yaml(FULL, "policy.yaml"), "policy.yaml")
    assert p == RasPolicy(
        corrected_degraded=5.0,
        corrected_failing=50.0,
        half_life=1800.0,
        uncorrectable="degraded",
        poison_degraded=2,
        poison_failing=4,
        device_health=False,
        poison_poll=120.0,
        drain_rate=64 * MiB,
        reserve_bytes=1024 * MiB,
        reserve_percent=10.0,
        max_step=5.0,
        offline=True,
    )


def test_reserve_is_the_larger_of_bytes_and_percent():
    p = RasPolicy(reserve_bytes=100, reserve_percent=5.0)
    assert p.reserve(1000) == 100 and p.reserve(10_000) == 500


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"uncorectable": "failing"}, "policy.yaml: ras.uncorectable: unknown key 'uncorectable' (did you mean"),
        ({"uncorrectable": "panic"}, "policy.yaml: ras.uncorrectable: must be one of failing, degraded, got 'panic'"),
        ({"corrected_per_hour": {"degraded": 0}}, "policy.yaml: ras.corrected_per_hour.degraded: must be a number > 0"),
        (
            {"corrected_per_hour": {"degraded": 50, "failing": 10}},
            "ras.corrected_per_hour.failing: must be >= degraded",
        ),
        (
            {"poison_records": {"degraded": 3, "failing": 2}},
            "policy.yaml: ras.poison_records.failing: must be >= degra",
        ),
        ({"poison_records": {"degraded": 0}}, "policy.yaml: ras.poison_records.degraded: must be an integer >= 1"),
        ({"half_life": "soon"}, "policy.yaml: ras.half_life: "),
        ({"drain": {"rate": 0}}, "policy.yaml: ras.drain.rate: must be a size"),
        ({"drain": {"reserve_percent": 95}}, "policy.yaml: ras.drain.reserve_percent: must be a number in [0, 90]"),
        ({"drain": {"offline": "yes"}}, "policy.yaml: ras.drain.offline: must be true or false, got 'yes'"),
        ({"drain": 5}, "policy.yaml: ras.drain: must be a mapping, got int 5"),
        ([1, 2], "policy.yaml: ras: must be a mapping, got list"),
    ],
)
def test_bad_values_give_one_line_errors(doc, message):
    with pytest.raises(ConfigError) as info:
        RasPolicy.from_mapping(doc, "policy.yaml")
    text = str(info.value)
    assert message in text and "\n" not in text
