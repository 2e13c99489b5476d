"""Reaction time in the simulator: how long after a change in heat (a hot set shifts, a burst starts, a new set of
experts becomes active, a phase begins) cxltierd's fast-tier share is back within 5% of the oracle's.

Pure: the change times come from the scenario's phases, the shares from two runs' interval series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cxltierd.emulate.spec import Burst, Groups, HotSet, Scenario

WITHIN = 0.95  # cxltierd's interval share at least this fraction of the oracle's counts as caught up


def change_times(scenario: Scenario, duration: float) -> list[float]:
    """Scenario times (0 < t < duration) at which some process's heat moves, sorted, without duplicates."""
    out: set[float] = set()
    for p in scenario.processes:
        end_of = [ph.at for ph in p.phases[1:]] + [p.exit_at if p.exit_at is not None else duration]
        for ph, end in zip(p.phases, end_of, strict=True):
            start = max(ph.at, p.start_at)
            if start > 0:
                out.add(start)
            pat = ph.pattern
            if isinstance(pat, HotSet) and pat.shift_period:
                period, first = pat.shift_period, start + pat.shift_period
            elif isinstance(pat, Burst):
                period, first = pat.period, start + pat.offset
            elif isinstance(pat, Groups):
                period, first = pat.period, start + pat.period
            else:
                continue
            k = 0
            while (t := first + k * period) < min(end, duration):
                if t > 0:
                    out.add(round(t, 9))
                k += 1
    return sorted(t for t in out if t < duration)


def reaction_times(
    ours: Sequence[tuple[float, float]], oracle: Sequence[tuple[float, float]], changes: Sequence[float]
) -> list[float]:
    """For each change: seconds from it to the end of the first interval where our share is within WITHIN of the
    oracle's. A change not caught up before the next one (or the run's end) counts as inf."""
    best = dict(oracle)
    out = []
    bounds = [*changes[1:], math.inf]
    for c, nxt in zip(changes, bounds, strict=True):
        hit = next((t for t, s in ours if c < t <= nxt and t in best and s >= WITHIN * best[t]), None)
        out.append(math.inf if hit is None else hit - c)
    return out


def median(values: Sequence[float]) -> float:
    """The median (inf counts as the largest value); nan for no values."""
    v = sorted(values)
    if not v:
        return math.nan
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
