"""The `ras:` policy section: thresholds of the health model and the limits of a drain (RasPolicy).

ras:
  enabled: true                 # read the cxl trace events through a tracefs instance of cxltierd's own
  corrected_per_hour: {degraded: 10, failing: 100}   # corrected errors per hour (decayed estimate)
  half_life: 1h                 # decay of the corrected-error count
  uncorrectable: failing        # state after an uncorrectable media/DRAM/AER event: failing or degraded
  poison_records: {degraded: 1, failing: 16}         # poisoned DPAs listed for one memdev
  device_health: true           # memory-module health_status / media_status / alerts move the state
  poison_poll: 60s              # how often the poison list is read
  health_poll: 60s              # how often each memdev's Get Health Info is read through the CXL mailbox
  soft_offline_poison: false    # soft-offline the pages holding listed poison (by HPA) while the node is online
  drain:
    rate: 256MiB                # bytes per second moved off a failing node
    reserve: 256MiB             # bytes that stay free on every target node ...
    reserve_percent: 5          # ... or this share of its total, whichever is larger
    max_step: 10s               # a step moves at most rate * max_step (after a pause or a restart)
    offline: false              # offline the drained node's memory blocks
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cxltierd.validate import Checker, join

MiB = 1 << 20
LEVELS: tuple[str, ...] = ("healthy", "degraded", "failing")  # worst last
TOP_KEYS = (
    "enabled",
    "corrected_per_hour",
    "half_life",
    "uncorrectable",
    "poison_records",
    "device_health",
    "poison_poll",
    "health_poll",
    "soft_offline_poison",
    "drain",
)
DRAIN_KEYS = ("rate", "reserve", "reserve_percent", "max_step", "offline")


@dataclass(frozen=True)
class RasPolicy:
    """Health thresholds and drain limits; the defaults are what an absent `ras:` section means."""

    enabled: bool = True
    corrected_degraded: float = 10.0  # corrected errors per hour at which a memdev is degraded
    corrected_failing: float = 100.0  # ... and failing
    half_life: float = 3600.0  # seconds
    uncorrectable: str = "failing"  # "failing" or "degraded"
    poison_degraded: int = 1
    poison_failing: int = 16
    device_health: bool = True
    poison_poll: float = 60.0  # seconds
    health_poll: float = 60.0  # seconds
    soft_offline_poison: bool = False
    drain_rate: int = 256 * MiB  # bytes per second
    reserve_bytes: int = 256 * MiB
    reserve_percent: float = 5.0
    max_step: float = 10.0  # seconds
    offline: bool = False

    @classmethod
    def from_mapping(cls, doc: Any, source: str = "", path: str = "ras", checker: Checker | None = None) -> RasPolicy:
        """The section from its parsed YAML (None: defaults). Raises ConfigError "SOURCE: ras.key: what", or notes
        each problem with `checker` (policy check's collecting one)."""
        c = checker or Checker(source)
        d = c.mapping(doc, path, TOP_KEYS)
        p = cls()
        cph, poison = join(path, "corrected_per_hour"), join(path, "poison_records")
        cm = c.mapping(d.get("corrected_per_hour"), cph, ("degraded", "failing"))
        pm = c.mapping(d.get("poison_records"), poison, ("degraded", "failing"))
        dpath = join(path, "drain")
        dm = c.mapping(d.get("drain"), dpath, DRAIN_KEYS)
        out = cls(
            enabled=c.boolean(d, "enabled", path, p.enabled),
            corrected_degraded=c.number(cm, "degraded", cph, p.corrected_degraded, lo=0, lo_open=True),
            corrected_failing=c.number(cm, "failing", cph, p.corrected_failing, lo=0, lo_open=True),
            half_life=c.seconds(d, "half_life", path, p.half_life, lo=1, hi=30 * 86400),
            uncorrectable=c.choice(d, "uncorrectable", path, ("failing", "degraded"), p.uncorrectable),
            poison_degraded=c.integer(pm, "degraded", poison, p.poison_degraded, lo=1),
            poison_failing=c.integer(pm, "failing", poison, p.poison_failing, lo=1),
            device_health=c.boolean(d, "device_health", path, p.device_health),
            poison_poll=c.seconds(d, "poison_poll", path, p.poison_poll, lo=1, hi=86400),
            health_poll=c.seconds(d, "health_poll", path, p.health_poll, lo=1, hi=86400),
            soft_offline_poison=c.boolean(d, "soft_offline_poison", path, p.soft_offline_poison),
            drain_rate=c.size(dm, "rate", dpath, p.drain_rate, lo=1),
            reserve_bytes=c.size(dm, "reserve", dpath, p.reserve_bytes),
            reserve_percent=c.number(dm, "reserve_percent", dpath, p.reserve_percent, lo=0, hi=90),
            max_step=c.seconds(dm, "max_step", dpath, p.max_step, lo=0.01, hi=3600),
            offline=c.boolean(dm, "offline", dpath, p.offline),
        )
        if out.corrected_failing < out.corrected_degraded:
            c.fail(
                join(cph, "failing"), f"must be >= degraded ({out.corrected_degraded:g}), got {out.corrected_failing:g}"
            )
        if out.poison_failing < out.poison_degraded:
            c.fail(join(poison, "failing"), f"must be >= degraded ({out.poison_degraded}), got {out.poison_failing}")
        return out

    def reserve(self, total: int) -> int:
        """Bytes that must stay free on a target node of `total` bytes."""
        return max(self.reserve_bytes, int(total * self.reserve_percent / 100))
