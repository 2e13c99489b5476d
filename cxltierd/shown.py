"""show(value): a value as quoted in a one-line message, cut to a few dozen characters, at a cost bounded by that.

A value read from a hostile file can be a string of a megabyte, a list that YAML aliases expand to billions of
items, or an integer of thousands of digits; repr() of any of them would take the process down. show() builds the
text piece by piece and stops at the limit:

    show([1, 2]) == "[1, 2]"     show("x" * 10**6) == "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 4  # containers nested deeper are shown as "..."


def show(value: Any, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters ("..." at the end when cut)."""
    text = _prefix(value, limit + 1, 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _prefix(value: Any, budget: int, depth: int) -> str:
    """repr(value), or a prefix of it at least `budget` characters long (or a short description)."""
    if isinstance(value, str | bytes):
        return repr(value[: max(budget, 1)])
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 4 * max(budget, 16):  # far more digits than can be shown
            return f"<integer of {_digits(abs(value))} digits>"
        return repr(value)
    if isinstance(value, list | tuple | Mapping):
        return _container(value, budget, depth)
    return repr(value)[: budget + 3]


def _container(value: list[Any] | tuple[Any, ...] | Mapping[Any, Any], budget: int, depth: int) -> str:
    if isinstance(value, Mapping):
        opening, closing = "{", "}"
    else:
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
    if depth >= MAX_DEPTH:
        return opening + "..." + closing
    parts: list[str] = []
    used = 1
    items = value.items() if isinstance(value, Mapping) else value
    for item in items:
        if used > budget:
            parts.append("...")
            break
        if isinstance(value, Mapping):
            k, v = item
            key = _prefix(k, budget - used, depth + 1)
            part = f"{key}: {_prefix(v, budget - used - len(key), depth + 1)}"
        else:
            part = _prefix(item, budget - used, depth + 1)
        parts.append(part)
        used += len(part) + 2
    if isinstance(value, tuple) and len(parts) == 1:
        parts[0] += ","
    return opening + ", ".join(parts) + closing


def _digits(n: int) -> int:
    """Decimal digits of n > 0, without converting it to text (which Python refuses beyond 4300 digits)."""
    d = int((n.bit_length() - 1) * 0.30102999566398120) + 1
    return d + 1 if n >= 10**d else d
