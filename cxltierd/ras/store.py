"""The health model's state as JSON (memdev -> MemdevHealth), so a restart keeps what was latched: a failing memdev
stays failing until an operator resets it. Pure: the caller reads and writes the file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cxltierd.ras.health import MemdevHealth
from cxltierd.ras.policy import LEVELS
from cxltierd.validate import Checker, join, show

KEYS = ("state", "latched", "corrected", "as_of", "poison", "cor_counts", "cause")


def dump(states: Mapping[str, MemdevHealth]) -> dict[str, Any]:
    """A JSON-ready form of every memdev's health."""
    return {
        name: {
            "state": h.state,
            "latched": h.latched,
            "corrected": h.corrected,
            "as_of": h.as_of,
            "poison": sorted(h.poison),
            "cor_counts": list(h.cor_counts) if h.cor_counts is not None else None,
            "cause": h.cause,
        }
        for name, h in sorted(states.items())
    }


def load(doc: Any, source: str) -> dict[str, MemdevHealth]:
    """Dump's form read back; a broken one raises ConfigError "SOURCE: memN.key: what"."""
    c = Checker(source)
    out = {}
    if not isinstance(doc, Mapping | None):
        c.fail("", f"must be a mapping of memdev names, got {type(doc).__name__} {show(doc)}")
    for name, value in (doc or {}).items():
        if not isinstance(name, str) or not name:
            c.fail("", f"memdev name must be a non-empty string, got {show(name)}")
        d = c.mapping(value, name, KEYS)
        poison = c.sequence(d.get("poison"), join(name, "poison"))
        counts = d.get("cor_counts")
        if counts is not None and not (isinstance(counts, list) and len(counts) == 2):
            c.fail(join(name, "cor_counts"), f"must be a list of two counts, got {show(counts)}")
        cpath = join(name, "cor_counts")
        out[name] = MemdevHealth(
            memdev=name,
            state=c.choice(d, "state", name, LEVELS, "healthy"),
            latched=c.choice(d, "latched", name, LEVELS, "healthy"),
            corrected=c.number(d, "corrected", name, 0.0, lo=0),
            as_of=c.number(d, "as_of", name, 0.0),
            poison=frozenset(c.integer(poison, i, join(name, "poison"), lo=0) for i in range(len(poison))),
            cor_counts=None
            if counts is None
            else (c.integer(counts, 0, cpath, lo=0), c.integer(counts, 1, cpath, lo=0)),
            cause=str(d.get("cause") or ""),
        )
    return out
