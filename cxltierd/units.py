"""Parse the sizes and durations people write in config and scenario files. Pure, no I/O.

    parse_size("512MiB") == 536870912     parse_size("2MB") == 2000000     parse_size(4096) == 4096
    parse_seconds("500ms") == 0.5          parse_seconds("2m") == 120.0     parse_seconds(5) == 5.0

Both raise ValueError with a text that says what is accepted; callers prefix the file and key path.
"""

from __future__ import annotations

import math
import re

from cxltierd.shown import show

# Binary units (KiB, Ki, K) are powers of 1024; decimal units (KB, kB) are powers of 1000. Case-insensitive.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "ki": 1 << 10,
    "kib": 1 << 10,
    "kb": 10**3,
    "m": 1 << 20,
    "mi": 1 << 20,
    "mib": 1 << 20,
    "mb": 10**6,
    "g": 1 << 30,
    "gi": 1 << 30,
    "gib": 1 << 30,
    "gb": 10**9,
    "t": 1 << 40,
    "ti": 1 << 40,
    "tib": 1 << 40,
    "tb": 10**12,
}
_SECOND_UNITS: dict[str, float] = {
    "": 1.0,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}
MAX_TEXT = 64  # a longer size or duration string is refused before the pattern runs over it
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")

SIZE_HELP = 'a size in bytes: an integer or a string like "4096", "512MiB", "4GiB", "2MB"'
SECONDS_HELP = 'a duration: a number of seconds or a string like "500ms", "5s", "2m", "1h"'


def _number(value: object) -> float | None:
    """The value as a float when it is a real number (not a bool), else None; an integer too large for a float is
    infinite (and refused as such by the callers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def parse_size(value: object) -> int:
    """Bytes from an int or a size string ("512MiB", "4GiB", "2MB", "1.5G"; a trailing "/s" is allowed).

    Raises ValueError for negative, non-finite, unparseable values and unknown units.
    """
    num = _number(value)
    if num is None:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise ValueError(f"must be {SIZE_HELP}, got {show(value)}")
        text = value.strip().removesuffix("/s")
        m = _NUMBER_UNIT.match(text)
        if not m:
            raise ValueError(f"must be {SIZE_HELP}, got {show(value)}")
        unit = m.group(2).lower()
        if unit not in _SIZE_UNITS:
            raise ValueError(
                f"unknown size unit {show(m.group(2))} in {show(value)} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            )
        num = float(m.group(1)) * _SIZE_UNITS[unit]
    if not math.isfinite(num) or num < 0:
        raise ValueError(f"must be {SIZE_HELP} (not negative), got {show(value)}")
    return round(num)


def parse_seconds(value: object) -> float:
    """Seconds from a number or a duration string ("500ms", "5s", "2m", "1h", "250us").

    Raises ValueError for negative, non-finite, unparseable values and unknown units.
    """
    num = _number(value)
    if num is None:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise ValueError(f"must be {SECONDS_HELP}, got {show(value)}")
        m = _NUMBER_UNIT.match(value)
        if not m:
            raise ValueError(f"must be {SECONDS_HELP}, got {show(value)}")
        unit = m.group(2).lower()
        if unit not in _SECOND_UNITS:
            raise ValueError(f"unknown time unit {show(m.group(2))} in {show(value)} (use ms, s, m, h)")
        num = float(m.group(1)) * _SECOND_UNITS[unit]
    if not math.isfinite(num) or num < 0:
        raise ValueError(f"must be {SECONDS_HELP} (not negative), got {show(value)}")
    return num


def format_size(n: int) -> str:
    """A short human form: 2097152 -> "2MiB", 1610612736 -> "1.5GiB", 1000 -> "1000B"."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= factor:
            value = n / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B"


def cpulist(values: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 8) -> "0-3,8", the kernel's cpulist format."""
    out: list[str] = []
    for v in sorted(values):
        if out and v == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


def human_bytes(n: int | None) -> str:
    """Bytes for people: 1536 -> "1.5 KiB", None -> "?"."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
