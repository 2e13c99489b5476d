"""Reaction time in the simulator: change times from the scenario, catch-up times from two share series."""

import math

from cxltierd.emulate import read_scenario
from cxltierd.emulate.reaction import change_times, median, reaction_times


def test_change_times_of_the_shipped_scenarios():
    shift = read_scenario("hotset-shift")
    assert change_times(shift, 300) == [90.0, 180.0, 270.0]  # shift_period 90 s
    assert change_times(read_scenario("zipf-static"), 600) == []  # nothing moves
    moe = change_times(read_scenario("moe-experts"), 120)
    assert moe and all(0 < t < 120 for t in moe) and moe == sorted(set(moe))
    # four tenants with 30 s bursts every 120 s, one after another: a burst starts every 30 s (the one at 0 is no change)
    assert change_times(read_scenario("bursty-tenants"), 150) == [30.0, 60.0, 90.0, 120.0]


def test_reaction_is_the_first_interval_within_five_percent_of_the_oracle():
    oracle = [(t, 0.9) for t in range(1, 21)]
    ours = [(t, 0.5 if 10 <= t < 14 else 0.88) for t in range(1, 21)]  # the change at 9.5 s dips until t=14
    assert reaction_times(ours, oracle, [9.5]) == [4.5]
    # a second change before catching up: the first counts as never caught up
    assert reaction_times(ours, oracle, [9.5, 12.0]) == [math.inf, 2.0]
    assert median([3.0, math.inf, 1.0]) == 3.0 and median([1.0, 2.0]) == 1.5 and math.isnan(median([]))
