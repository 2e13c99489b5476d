"""Scripted CXL errors of a scenario (`ras_events:`): their validated form and the kernel trace line each becomes.
Pure; cxltierd.emulate.ras writes the lines into the emulated tree's tracefs.

    ras_events:
      - {at: 60, memdev: mem0, event: general_media, log: failure}       # uncorrectable unless `corrected: true`
      - {at: 90, memdev: mem0, event: poison, dpa: 0x40000}
      - {at: 30, memdev: mem0, event: memory_module, health_status: MAINTENANCE_NEEDED}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cxltierd.validate import Checker

KINDS = ("general_media", "dram", "memory_module", "poison")
LOGS = ("informational", "warning", "failure", "fatal")
KEYS = ("at", "memdev", "event", "log", "corrected", "dpa", "health_status", "media_status")


@dataclass(frozen=True)
class RasScript:
    """One scripted CXL event at a scenario time."""

    at: float
    memdev: str
    event: str  # one of KINDS
    log: str = "failure"
    corrected: bool = False
    dpa: int = 0x1000
    health_status: str = ""
    media_status: str = "Normal"


def parse_ras_events(c: Checker, value: Any) -> tuple[RasScript, ...]:
    """The `ras_events:` list, sorted by time. Raises ConfigError naming the entry."""
    out = []
    for i, item in enumerate(c.sequence(value, "ras_events")):
        path = f"ras_events[{i}]"
        m = c.mapping(item, path, KEYS, required=("at", "memdev", "event"))
        out.append(
            RasScript(
                at=c.seconds(m, "at", path, hi=1e7),
                memdev=c.string(m, "memdev", path),
                event=c.choice(m, "event", path, KINDS),
                log=c.choice(m, "log", path, LOGS, "failure"),
                corrected=c.boolean(m, "corrected", path, False),
                dpa=c.integer(m, "dpa", path, 0x1000, lo=0),
                health_status=c.string(m, "health_status", path, ""),
                media_status=c.string(m, "media_status", path, "Normal"),
            )
        )
    return tuple(sorted(out, key=lambda s: s.at))


def trace_line(s: RasScript, ts: float, hpa: int | None) -> str:
    """The line the kernel would print for `s` at trace time `ts` (the 6.12 format, fields the parser reads)."""
    head = f"  irq/33-0000:0d:-208     [000] .....  {ts:11.6f}: cxl_{s.event}: memdev={s.memdev} host=0000:0d:00.0"
    log = s.log.capitalize()
    addr = f" hpa={hpa:x} region=region0" if hpa is not None else ""
    if s.event == "poison":
        hpa_text = f" hpa={hpa:#x}" if hpa is not None else ""
        return (
            f"{head} serial=0 trace_type=List region=region0{hpa_text} dpa={s.dpa:#x} dpa_length=0x40 source=Internal"
        )
    common = f"{head} serial=0 log={log} : time=0 uuid=0 len=128 flags='0x1' handle=1 related_handle=0 :"
    if s.event == "memory_module":
        return (
            f"{common} event_type='Health Status Change' health_status='{s.health_status}' "
            f"media_status='{s.media_status}' as_life_used=Normal as_dev_temp=Normal as_cor_vol_err_cnt=Normal "
            "as_cor_per_err_cnt=Normal life_used=10 device_temp=40 dirty_shutdown_cnt=0 cor_vol_err_cnt=0 "
            "cor_per_err_cnt=0"
        )
    flags = "THRESHOLD_EVENT" if s.corrected else "UNCORRECTABLE_EVENT|THRESHOLD_EVENT"
    return f"{common} dpa={s.dpa:x} dpa_flags='' descriptor='{flags}' type='0x3'{addr}"
