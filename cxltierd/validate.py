"""Checks for YAML config files (policy, scenarios): each failure is a ConfigError naming the key path.

Messages read `tiers.overrides.2: must be one of hbm, ddr, cxl, pmem, unknown, got 'fast'`; the loader prefixes
the file name. Unknown keys get the nearest valid key suggested.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from cxltierd.errors import ConfigError

T = TypeVar("T")


def join(path: str, key: object) -> str:
    """Key path of a child: join("tiers", "fast") -> "tiers.fast"; join("pin", 0) -> "pin[0]"."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}" if path else message)


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def mapping(path: str, value: Any, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    """A mapping whose keys are all in `allowed` (and include `required`); None counts as empty."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise fail(path, f"must be a mapping, got {type(value).__name__} {show(value)}")
    allowed = list(allowed)
    for key in value:
        if not isinstance(key, str) or key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (valid keys: {', '.join(allowed)})"
            raise fail(join(path, key), f"unknown key{hint}")
    for key in required:
        if key not in value:
            raise fail(join(path, key), "is required")
    return dict(value)


def sequence(path: str, value: Any) -> list[Any]:
    """A list; None counts as empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(path, f"must be a list, got {type(value).__name__} {show(value)}")
    return value


def number(path: str, value: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> float:
    """A finite number in [lo, hi] (or (lo, hi] with lo_open)."""
    rng = f"{'(' if lo_open else '['}{'-inf' if lo is None else _num(lo)}, {'inf' if hi is None else _num(hi)}]"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(path, f"must be a number in {rng}, got {show(value)}")
    if (lo is not None and (value < lo or (lo_open and value == lo))) or (hi is not None and value > hi):
        raise fail(path, f"must be in {rng}, got {_num(value)}")
    return float(value)


def integer(path: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, f"must be an integer in {rng}, got {show(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise fail(path, f"must be in {rng}, got {value}")
    return value


def boolean(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(path, f"must be true or false, got {show(value)}")
    return value


def string(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise fail(path, f"must be a non-empty string, got {show(value)}")
    return value


def choice(path: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise fail(path, f"must be one of {', '.join(choices)}, got {show(value)}")
    return value


def regex(path: str, value: Any) -> str:
    text = string(path, value)
    try:
        re.compile(text)
    except re.error as e:
        raise fail(path, f"invalid regular expression {show(text)}: {e}") from None
    return text


def converted(path: str, value: Any, convert: Callable[[Any], T]) -> T:
    """Apply a unit parser (parse_size, parse_seconds), turning its ValueError into a ConfigError at `path`."""
    try:
        return convert(value)
    except (ValueError, TypeError) as e:
        raise fail(path, str(e)) from None


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)
