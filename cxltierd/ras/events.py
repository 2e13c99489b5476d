"""CXL RAS trace events: a tracefs text line (trace or trace_pipe) -> RasEvent, parsed by field name.

A line looks like
    irq/33-0000:0d:-208 [000] ..... 43.263110: cxl_dram: memdev=mem0 host=0000:0d:00.0 serial=0 log=Failure : ...
The field set differs between kernels (7.3 adds sub_type, hpa_alias0, cme_count, ...), so fields are read by name
and unknown ones are kept in `fields`. Values are `name=value`, `name='quoted text'`, `name: 'quoted text'` (the AER
events), or a run of hex bytes (`comp_id=00 00 ...`). DPA, HPA and poison lengths are hexadecimal (the kernel
prints them with %llx, with or without 0x); an HPA of all ones means "not mapped" and reads as None.

parse_line never raises: it returns a RasEvent, None (a blank line, a comment, another subsystem's event) or a
ParseError naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# The cxl event names the 6.12 and 7.3 lab kernels define (events/cxl/); any other cxl_* event parses generically.
EVENT_NAMES: tuple[str, ...] = (
    "cxl_aer_correctable_error",
    "cxl_aer_uncorrectable_error",
    "cxl_dram",
    "cxl_general_media",
    "cxl_generic_event",
    "cxl_memory_module",
    "cxl_memory_sparing",
    "cxl_overflow",
    "cxl_poison",
    "cxl_port_aer_correctable_error",
    "cxl_port_aer_uncorrectable_error",
)
# What an event means for health: the `kind` of a RasEvent.
KINDS: tuple[str, ...] = ("corrected", "uncorrectable", "poison", "health", "overflow", "other")
HEALTH_INTS = ("life_used", "device_temp", "dirty_shutdown_cnt", "cor_vol_err_cnt", "cor_per_err_cnt")
HEALTH_ALERTS = ("as_life_used", "as_dev_temp", "as_cor_vol_err_cnt", "as_cor_per_err_cnt")  # Normal/Warning/Critical
HEALTH_TEXTS = ("health_status", "media_status", *HEALTH_ALERTS)
_ALL_ONES = (1 << 64) - 1

_HEADER = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S{4,6}\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s?(?P<body>.*)$"
)
_TOKEN = re.compile(r"(?:[^\s']|'[^']*')+")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_HEXBYTE = re.compile(r"[0-9a-fA-F]{2}")
_OVERFLOW = re.compile(r"(\d+) records from (\d+) to (\d+)")


@dataclass(frozen=True)
class RasEvent:
    """One CXL trace event. `time` is the trace timestamp (seconds, the trace clock: boot time by default)."""

    name: str  # cxl_dram, cxl_poison, ...
    time: float
    memdev: str | None  # memdev=memN; for the port AER events, their device= name
    kind: str  # one of KINDS
    log: str | None = None  # the device event log: Informational, Warning, Failure, Fatal
    host: str | None = None  # the memdev's parent PCI device
    dpa: int | None = None  # device physical address
    hpa: int | None = None  # host physical address, None when the DPA is not mapped into a region
    length: int | None = None  # bytes (the poison record's dpa_length)
    region: str | None = None
    health: dict[str, int | str] = field(default_factory=dict, hash=False)  # memory-module health fields
    fields: dict[str, str] = field(default_factory=dict, hash=False)  # every field as printed, quotes removed


@dataclass(frozen=True)
class ParseError:
    """A cxl trace line that could not be read; str() is one line naming it."""

    line: str
    reason: str

    def __str__(self) -> str:
        text = self.line.strip()
        return f"trace line {text[:100] + ('...' if len(text) > 100 else '')!r}: {self.reason}"


def parse_line(line: str) -> RasEvent | ParseError | None:
    """The event on a tracefs text line, None for a line that is not a cxl event, or a ParseError."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    m = _HEADER.match(line.rstrip("\n"))
    if m is None:
        return ParseError(line, "not a tracefs event line") if "cxl_" in line else None
    name = m["event"]
    if not name.startswith("cxl_"):
        return None
    fields, rest = _fields(m["body"])
    try:
        return _event(name, float(m["ts"]), fields, rest)
    except ValueError as e:
        return ParseError(line, str(e))


def parse_lines(lines: Iterable[str]) -> tuple[list[RasEvent], list[ParseError]]:
    """The events on the lines, and the errors (lines that are not cxl events are skipped)."""
    events: list[RasEvent] = []
    errors: list[ParseError] = []
    for line in lines:
        got = parse_line(line)
        if isinstance(got, RasEvent):
            events.append(got)
        elif isinstance(got, ParseError):
            errors.append(got)
    return events, errors


def _fields(body: str) -> tuple[dict[str, str], list[str]]:
    """Name -> value of a line's body, and the words that belong to no name (the overflow text, generic data)."""
    fields: dict[str, str] = {}
    rest: list[str] = []
    key: str | None = None
    pending: str | None = None
    for tok in _TOKEN.findall(body):
        if pending is not None:
            fields[pending], key, pending = _unquote(tok), pending, None
            continue
        name, eq, value = tok.partition("=")
        if eq and _NAME.fullmatch(name):
            fields[name], key = _unquote(value if value.startswith("'") else value.rstrip(":")), name
        elif tok.endswith(":") and _NAME.fullmatch(tok[:-1]):
            pending = tok[:-1]
        elif key is not None and _HEXBYTE.fullmatch(tok) and _HEXBYTE.fullmatch(fields[key][-2:]):
            fields[key] += " " + tok
        else:
            key = None
            if tok != ":":
                rest.append(tok)
    return fields, rest


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


def _event(name: str, ts: float, fields: dict[str, str], rest: list[str]) -> RasEvent:
    memdev = fields.get("memdev") or (fields.get("device") if name.startswith("cxl_port_") else None)
    if not memdev:
        raise ValueError(f"{name}: no memdev= field")
    hpa = _hex(fields, "hpa")
    if name == "cxl_overflow":
        m = _OVERFLOW.search(" ".join(rest))
        if m is None:
            raise ValueError(f"{name}: no 'N records from T1 to T2' text")
        fields.update(count=m[1], first_ts=m[2], last_ts=m[3])
    elif rest:
        fields["data"] = " ".join(rest)
    return RasEvent(
        name=name,
        time=ts,
        memdev=memdev,
        kind=_kind(name, fields),
        log=fields.get("log") or None,
        host=fields.get("host") or fields.get("parent") or None,
        dpa=_hex(fields, "dpa"),
        hpa=None if hpa == _ALL_ONES else hpa,
        length=_hex(fields, "dpa_length"),
        region=fields.get("region") or None,
        health=_health(fields) if name == "cxl_memory_module" else {},
        fields=fields,
    )


def _kind(name: str, fields: dict[str, str]) -> str:
    if name in ("cxl_dram", "cxl_general_media"):
        flags = fields.get("descriptor", "").split("|")
        return "uncorrectable" if "UNCORRECTABLE_EVENT" in flags else "corrected"
    return {
        "cxl_aer_correctable_error": "corrected",
        "cxl_port_aer_correctable_error": "corrected",
        "cxl_aer_uncorrectable_error": "uncorrectable",
        "cxl_port_aer_uncorrectable_error": "uncorrectable",
        "cxl_poison": "poison",
        "cxl_memory_module": "health",
        "cxl_overflow": "overflow",
    }.get(name, "other")


def _hex(fields: dict[str, str], key: str) -> int | None:
    text = fields.get(key)
    if text is None or text == "":
        return None
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError(f"{key}: not a hexadecimal number: {text!r}") from None


def _health(fields: dict[str, str]) -> dict[str, int | str]:
    out: dict[str, int | str] = {k: fields[k] for k in HEALTH_TEXTS if k in fields}
    for k in HEALTH_INTS:
        if k in fields:
            if not fields[k].isdigit():
                raise ValueError(f"{k}: not a decimal number: {fields[k]!r}")
            out[k] = int(fields[k])
    return out
