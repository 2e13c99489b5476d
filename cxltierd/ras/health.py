"""Health of CXL memdevs and of the NUMA nodes they back: healthy -> degraded -> failing, a pure state machine.

A memdev's state is the worse of two levels:
- the latched level, raised by events that stay true until an operator acts: an uncorrectable media/DRAM/AER event
  (policy `uncorrectable`), poison records (counted by DPA, `poison_records`), the device's own health report
  (memory-module health_status, media_status and Critical alerts, when `device_health`), an overflow of the Failure
  or Fatal log (records lost), and a corrected-error rate that reached `failing`;
- the rate level, from corrected errors (corrected media/DRAM/AER events, rises of the device's corrected counters,
  overflowed Informational/Warning records). The count decays exponentially with `half_life`; the hourly rate is
  its steady-state estimate count * ln 2 / half_life * 3600. Degraded by rate alone returns to healthy once the
  rate falls below half the degraded threshold (hysteresis).
So failing never ends by itself: only `reset` (the operator's undrain) returns a memdev to healthy. A node takes
the worst state of its memdevs (nodes.py). Every change of state is a Transition naming what caused it; time is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from cxltierd.ras.events import HEALTH_ALERTS, RasEvent
from cxltierd.ras.policy import LEVELS, RasPolicy

HEALTHY, DEGRADED, FAILING = LEVELS


@dataclass(frozen=True)
class MemdevHealth:
    """What the health model knows of one memdev at time `as_of` (daemon clock, seconds)."""

    memdev: str
    state: str = HEALTHY
    latched: str = HEALTHY  # level that only reset() lowers
    corrected: float = 0.0  # decayed count of corrected errors at as_of
    as_of: float = 0.0
    poison: frozenset[int] = frozenset()  # DPAs of listed poison records
    cor_counts: tuple[int, int] | None = None  # last cor_vol_err_cnt, cor_per_err_cnt the device reported
    cause: str = ""  # why it is in its state


@dataclass(frozen=True)
class Transition:
    """A memdev changed state at `time` because of `cause` (and `event`, when an event did it)."""

    memdev: str
    time: float
    old: str
    new: str
    cause: str
    event: RasEvent | None = None

    def __str__(self) -> str:
        return f"{self.memdev}: {self.old} -> {self.new} ({self.cause})"


def worse(a: str, b: str) -> str:
    """The worse of two health levels (healthy < degraded < failing)."""
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


def corrected_per_hour(h: MemdevHealth, now: float, policy: RasPolicy) -> float:
    """The memdev's corrected-error rate estimate at `now`, per hour."""
    return _decayed(h, now, policy) * math.log(2) / policy.half_life * 3600


def observe(h: MemdevHealth, event: RasEvent, now: float, policy: RasPolicy) -> tuple[MemdevHealth, Transition | None]:
    """The state after `event` (which must be about h.memdev) arrived at `now`, and the transition it caused."""
    score = _decayed(h, now, policy)
    latched, why = h.latched, ""
    poison, counts = h.poison, h.cor_counts
    where = f" at dpa {event.dpa:#x}" if event.dpa is not None else ""
    if event.kind == "corrected":
        score += 1
    elif event.kind == "uncorrectable":
        latched, why = _raise(latched, policy.uncorrectable, f"uncorrectable {event.name}{where}", why)
    elif event.kind == "poison" and event.dpa is not None:
        cleared = event.fields.get("trace_type") == "Clear"
        poison = poison - {event.dpa} if cleared else poison | {event.dpa}
        level = _poison_level(len(poison), policy)
        latched, why = _raise(latched, level, f"{len(poison)} poison records ({event.name}{where})", why)
    elif event.kind == "health":
        vol, per = event.health.get("cor_vol_err_cnt"), event.health.get("cor_per_err_cnt")
        if isinstance(vol, int) and isinstance(per, int):
            if counts is not None and vol + per > sum(counts):
                score += vol + per - sum(counts)
            counts = (vol, per)
        if policy.device_health:
            level, text = device_level(event.health)
            latched, why = _raise(latched, level, f"device health: {text} ({event.name})", why)
    elif event.kind == "overflow":
        if event.log in ("Failure", "Fatal"):
            latched, why = _raise(latched, policy.uncorrectable, f"{event.log} log overflowed ({event.name})", why)
        else:
            score += int(event.fields.get("count", "0") or 0)
    new = replace(h, latched=latched, corrected=score, as_of=now, poison=poison, cor_counts=counts)
    return _settled(h, new, now, policy, why, event)


def observe_all(
    states: Mapping[str, MemdevHealth], events: Iterable[RasEvent], now: float, policy: RasPolicy
) -> tuple[dict[str, MemdevHealth], list[Transition]]:
    """Every memdev's state after `events` (in order; a memdev seen first starts healthy), and the transitions."""
    out, transitions = dict(states), []
    for event in events:
        if event.memdev:
            out[event.memdev], t = observe(out.get(event.memdev) or MemdevHealth(event.memdev), event, now, policy)
            transitions += [t] if t is not None else []
    return out, transitions


def settle(h: MemdevHealth, now: float, policy: RasPolicy) -> tuple[MemdevHealth, Transition | None]:
    """The state at `now` with no new event (corrected errors decay), and the transition if it changed."""
    return _settled(h, replace(h, corrected=_decayed(h, now, policy), as_of=now), now, policy, "", None)


def reset(h: MemdevHealth, now: float, cause: str = "operator undrain") -> tuple[MemdevHealth, Transition | None]:
    """Back to healthy with nothing counted (the operator's decision); the device's counters stay the baseline."""
    new = MemdevHealth(h.memdev, as_of=now, cor_counts=h.cor_counts, cause=cause)
    return new, (Transition(h.memdev, now, h.state, HEALTHY, cause) if h.state != HEALTHY else None)


def device_level(health: Mapping[str, int | str]) -> tuple[str, str]:
    """The level a memory-module health report asks for, and the words that say why."""
    flags = str(health.get("health_status", "")).split("|")
    media = str(health.get("media_status", ""))
    found: list[tuple[str, str]] = []
    if "REPLACEMENT_NEEDED" in flags or "HW_REPLACEMENT_NEEDED" in flags:
        found.append((FAILING, "health_status REPLACEMENT_NEEDED"))
    named = [f for f in flags if f in ("MAINTENANCE_NEEDED", "PERFORMANCE_DEGRADED")]
    if named:
        found.append((DEGRADED, "health_status " + "|".join(named)))
    if media and media != "Normal":
        conditional = "event of" in media.lower()  # data at risk only on power loss / shutdown
        found.append((DEGRADED if conditional else FAILING, f"media_status {media!r}"))
    found += [(DEGRADED, f"{k} Critical") for k in HEALTH_ALERTS if health.get(k) == "Critical"]
    level = HEALTHY
    for at, _ in found:
        level = worse(level, at)
    return level, ", ".join(text for at, text in found if at == level) or "normal"


def _decayed(h: MemdevHealth, now: float, policy: RasPolicy) -> float:
    return h.corrected * 0.5 ** (max(0.0, now - h.as_of) / policy.half_life)


def _raise(level: str, to: str, reason: str, why: str) -> tuple[str, str]:
    """The latched level raised to `to`, with the reason of the raise (the old reason when nothing rose)."""
    return (to, reason) if LEVELS.index(to) > LEVELS.index(level) else (level, why)


def _poison_level(count: int, policy: RasPolicy) -> str:
    if count >= policy.poison_failing:
        return FAILING
    return DEGRADED if count >= policy.poison_degraded else HEALTHY


def _settled(
    old: MemdevHealth, new: MemdevHealth, now: float, policy: RasPolicy, why: str, event: RasEvent | None
) -> tuple[MemdevHealth, Transition | None]:
    """New with its state evaluated from its latched level and its corrected rate, and the transition."""
    rate = corrected_per_hour(new, now, policy)
    rated = f"{rate:.1f} corrected errors/h"
    latched = new.latched
    if rate >= policy.corrected_failing:
        latched, why = _raise(latched, FAILING, f"{rated} >= {policy.corrected_failing:g}/h", why)
    state, cause = latched, why or old.cause
    if rate >= policy.corrected_degraded and state == HEALTHY:
        state, cause = DEGRADED, f"{rated} >= {policy.corrected_degraded:g}/h"
    elif old.state == DEGRADED and state == HEALTHY and rate >= policy.corrected_degraded / 2:
        state = DEGRADED  # hysteresis: stay until the rate halves
    elif old.state != HEALTHY and state == HEALTHY:
        cause = f"{rated} < {policy.corrected_degraded / 2:g}/h"
    if event is not None and state == old.state:
        cause = old.cause
    new = replace(new, latched=latched, state=state, cause=cause)
    return new, (Transition(old.memdev, now, old.state, state, cause, event) if state != old.state else None)
