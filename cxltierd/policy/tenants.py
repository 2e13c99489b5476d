"""Tenants: named groups of processes with a guarantee, a cap and a weight on the fast tier (pure).

tenants:
  - name: inference                      # [a-z0-9_-], at most 32 characters; "other" is reserved
    match: {cgroup: /ai.slice/inference}  # a process selector (pid, name, regex, cgroup prefix with descendants)
    fast_min: 32MiB                      # guarantee: bytes, or "25%" of the fast tier's capacity (default 0)
    fast_max: 60%                        # cap: bytes or percent (default: the whole fast tier)
    weight: 4                            # share of the rest of the fast tier, against the other tenants (default 1)
    class: latency                       # latency or batch (default batch): pressure takes batch memory first

Which tenant a process falls in: of the tenants whose selector matches it, the one whose cgroup prefix is longest
(the most specific cgroup; a selector without a cgroup counts as the shortest), and among equals the first listed.
A process no tenant matches belongs to the implicit tenant `other` (no guarantee, no cap, weight 1, class batch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cxltierd.errors import ConfigError
from cxltierd.model import Process
from cxltierd.units import format_size
from cxltierd.validate import Checker, join

if TYPE_CHECKING:
    from cxltierd.policy.schema import Selector

OTHER = "other"
CLASSES: tuple[str, ...] = ("latency", "batch")
MAX_TENANTS = 64  # each is a label value of the per-tenant metrics: bounded
TENANT_KEYS = ("name", "match", "fast_min", "fast_max", "weight", "class")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Amount:
    """Bytes, or a percentage of the fast tier's capacity."""

    bytes: int = 0
    percent: float | None = None

    def of(self, capacity: int) -> int:
        """Bytes this amount stands for on a fast tier of `capacity` bytes."""
        return int(capacity * self.percent / 100) if self.percent is not None else self.bytes

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else format_size(self.bytes)


@dataclass(frozen=True)
class Tenant:
    """One entry of the policy's tenants list."""

    name: str
    match: Selector
    fast_min: Amount = Amount()
    fast_max: Amount | None = None  # None: no cap
    weight: float = 1.0
    klass: str = "batch"  # "latency" or "batch"

    @property
    def specificity(self) -> int:
        """Length of the selector's cgroup prefix (-1 without one): the longest wins an overlap."""
        cg = self.match.cgroup
        return -1 if cg is None else len(cg.rstrip("/"))


@dataclass(frozen=True)
class Budget:
    """A tenant's bounds on one fast tier, in bytes."""

    name: str
    fast_min: int
    fast_max: int
    weight: float
    klass: str


def parse_tenants(c: Checker, value: Any, selector: Callable[[Checker, Any, str], Selector]) -> tuple[Tenant, ...]:
    """The tenants list; `selector` reads a process selector mapping (schema's)."""
    items = c.sequence(value, "tenants")
    if len(items) > MAX_TENANTS:
        c.fail("tenants", f"at most {MAX_TENANTS} tenants, got {len(items)}")
    out: list[Tenant] = []
    for i, item in enumerate(items):
        path = join("tenants", i)
        t = c.mapping(item, path, TENANT_KEYS, required=("name", "match"))
        name = c.string(t, "name", path)
        if not NAME.fullmatch(name) or name == OTHER:
            c.fail(join(path, "name"), f"must match [a-z0-9][a-z0-9_-]{{0,31}} and not be {OTHER!r}, got {name!r}")
        if any(x.name == name for x in out):
            c.fail(join(path, "name"), f"{name!r} is listed twice")
        fast_min = _amount(c, t, "fast_min", path) or Amount()
        fast_max = _amount(c, t, "fast_max", path)
        same_unit = fast_max is not None and (fast_min.percent is None) == (fast_max.percent is None)
        if (
            same_unit
            and fast_max is not None
            and (fast_min.percent or fast_min.bytes) > (fast_max.percent or fast_max.bytes)
        ):
            c.fail(join(path, "fast_max"), f"must be at least fast_min ({fast_min}), got {fast_max}")
        out.append(
            Tenant(
                name=name,
                match=selector(c, t.get("match"), join(path, "match")),
                fast_min=fast_min,
                fast_max=fast_max,
                weight=c.number(t, "weight", path, 1.0, lo=0, hi=1e6, lo_open=True),
                klass=c.choice(t, "class", path, CLASSES, "batch"),
            )
        )
    percent = [x for x in out if x.fast_min.percent is not None]
    if sum(x.fast_min.percent or 0 for x in percent) > 100:
        names = ", ".join(x.name for x in percent)
        c.fail("tenants", f"guarantees of {names} add up to more than 100% of the fast tier")
    return tuple(out)


def _amount(c: Checker, t: Mapping[str, Any], key: str, path: str) -> Amount | None:
    value = t.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            pct = -1.0
        if not 0 <= pct <= 100:
            c.fail(join(path, key), f"must be a percentage in [0, 100] or a size, got {value!r}")
        return Amount(percent=pct)
    return Amount(bytes=c.size(t, key, path, lo=0, hi=1 << 50))


def budgets(tenants: Sequence[Tenant], capacity: int) -> dict[str, Budget]:
    """Each tenant's guarantee and cap in bytes on a fast tier of `capacity` bytes, `other` included."""
    out = {
        t.name: Budget(
            t.name,
            min(t.fast_min.of(capacity), capacity),
            capacity if t.fast_max is None else min(t.fast_max.of(capacity), capacity),
            t.weight,
            t.klass,
        )
        for t in tenants
    }
    out[OTHER] = Budget(OTHER, 0, capacity, 1.0, "batch")
    return out


def overcommitted(tenants: Sequence[Tenant], capacity: int) -> str | None:
    """Why the guarantees cannot all hold on a fast tier of `capacity` bytes (naming the tenants), or None (also
    when there is no fast tier to judge by: capacity 0)."""
    if capacity <= 0:
        return None
    sized = [t for t in tenants if t.fast_min.of(capacity) > 0]
    total = sum(t.fast_min.of(capacity) for t in sized)
    if total <= capacity:
        return None
    names = ", ".join(f"{t.name} ({t.fast_min})" for t in sized)
    return (
        f"tenants: guarantees of {names} add up to {format_size(total)}, more than the fast tier's"
        f" {format_size(capacity)}"
    )


def check_fit(tenants: Sequence[Tenant], capacity: int, source: str = "") -> None:
    """Raise ConfigError (naming the file and the tenants) when the guarantees exceed the fast tier."""
    why = overcommitted(tenants, capacity)
    if why is not None:
        raise ConfigError(f"{source}: {why}" if source else why)


def tenant_of(tenants: Iterable[Tenant], p: Process | None) -> str:
    """The tenant a process falls in (see the module docstring for overlaps); `other` when none matches."""
    if p is None:
        return OTHER
    best: Tenant | None = None
    for t in tenants:
        if t.match.matches(p.pid, p.name, p.cmdline, p.cgroup) and (best is None or t.specificity > best.specificity):
            best = t
    return best.name if best is not None else OTHER


def explain(tenants: Sequence[Tenant], p: Process) -> list[str]:
    """Lines saying which tenants match a process and which one it falls in, and why."""
    hits = [t for t in tenants if t.match.matches(p.pid, p.name, p.cmdline, p.cgroup)]
    chosen = tenant_of(tenants, p)
    lines = [f"pid {p.pid} ({p.name}) in cgroup {p.cgroup or '?'}: tenant {chosen}"]
    if not hits:
        lines.append("  no tenant's selector matches: the implicit tenant 'other' (no guarantee, no cap)")
    for t in hits:
        why = "chosen" if t.name == chosen else "matches too, but a longer cgroup prefix or an earlier entry wins"
        cap = "none" if t.fast_max is None else str(t.fast_max)
        lines.append(f"  {t.name}: fast_min {t.fast_min}, fast_max {cap}, weight {t.weight:g}, class {t.klass} ({why})")
    return lines
