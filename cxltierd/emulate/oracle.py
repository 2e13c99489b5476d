"""The oracle of the simulated memory system: every region's true access rate, now or over any interval.

Pure: the rates come from the processes' workloads in closed form, so asking (about the past or the future)
changes nothing and draws no random numbers. Times are scenario time; keys are (pid, VBASE + i * region_size).
"""

from __future__ import annotations

from collections.abc import Sequence

from cxltierd.emulate.store import VBASE, Proc


def rates_at(procs: Sequence[Proc], region_size: int, t: float) -> dict[tuple[int, int], float]:
    """True accesses/s at time t of every region that exists then."""
    rs = region_size
    out: dict[tuple[int, int], float] = {}
    for p in procs:
        k = p.work.allocated_at(t)
        if k:
            rates = p.work.rates_at(t)
            for i in range(k):
                out[(p.pid, VBASE + i * rs)] = rates[i]
    return out


def mean_rates(procs: Sequence[Proc], region_size: int, a: float, b: float) -> dict[tuple[int, int], float]:
    """True mean accesses/s over [a, b] of the regions that exist at a or appear before b (the rates at a when the
    interval is empty)."""
    if b <= a:
        return rates_at(procs, region_size, a)
    rs = region_size
    out: dict[tuple[int, int], float] = {}
    for p in procs:
        k = max(p.work.allocated_at(a), p.work.allocated_at(min(b, p.work.end) - 1e-9))
        if k:
            acc = p.work.integrate(a, b)
            for i in range(k):
                out[(p.pid, VBASE + i * rs)] = acc[i] / (b - a)
    return out
