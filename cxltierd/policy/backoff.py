"""Backoff for failed moves: a region whose move failed is not planned again for a while (pure, time passed in).

A region's consecutive failures double its hold: FIRST_TICKS policy intervals after the first failure, twice that
after the second, and so on up to MAX_TICKS intervals. A move of the region that succeeds clears its record; so does
a quiet spell as long as the longest hold after its last hold ended, and the region leaving the sample (its process
exited or unmapped it). The loop keeps the records and hands the holds to decide() (PlacementState.held_until), so a
region the kernel keeps refusing (pinned pages, a full target) stops costing a move_pages(2) call every tick.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

Key = tuple[int, int]  # (pid, region start), as decide's

FIRST_TICKS = 2  # intervals a region is held after its first failed move
MAX_TICKS = 64  # the longest hold, in intervals


@dataclass(frozen=True)
class Strike:
    """A region's record of failed moves: how many in a row, and until when it is held back."""

    failures: int
    until: float


def hold(failures: int, interval: float) -> float:
    """Seconds a region is held after its `failures`-th consecutive failed move (doubling, capped)."""
    ticks = min(MAX_TICKS, FIRST_TICKS << min(failures - 1, 30))
    return ticks * interval


def update(
    strikes: Mapping[Key, Strike],
    failed: Iterable[Key],
    moved: Iterable[Key],
    live: Collection[Key],
    now: float,
    interval: float,
) -> dict[Key, Strike]:
    """The records after a tick: `failed` regions' moves failed at `now`, `moved` ones succeeded; only regions in
    `live` (this tick's sample) are kept, and a record quiet for MAX_TICKS intervals past its hold is forgotten."""
    done = set(moved)
    quiet = MAX_TICKS * interval
    out = {k: s for k, s in strikes.items() if k not in done and k in live and now - s.until < quiet}
    for k in failed:
        if k in done:
            continue
        n = out[k].failures + 1 if k in out else 1
        out[k] = Strike(n, now + hold(n, interval))
    return out


def held(strikes: Mapping[Key, Strike], now: float) -> dict[Key, float]:
    """The regions held back at `now`: key -> the time they may be planned again."""
    return {k: s.until for k, s in strikes.items() if s.until > now}
