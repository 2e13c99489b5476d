"""`engine: auto`: pick the engine by what the kernel offers, and report conflicts instead of fighting them.

Pure: `choose(requested, kernel facts, conflicts)` -> Choice. Order for auto, kernel mechanisms first and
move_pages where it must:
1. the kernel's NUMA-balancing tiering is already on (set by someone else): `numa_balancing`, watching only;
2. DAMON sysfs free for us and a kernel >= 6.11 (DAMOS migrate_hot/migrate_cold): `damos`;
3. DAMON sysfs free for us on an older kernel: `move_pages` (DAMON vaddr tracking + batched move_pages(2));
4. kernel.numa_balancing present: `numa_balancing`;
otherwise there is no engine. An engine asked for by name that this kernel cannot run is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxltierd.errors import CxltierdError
from cxltierd.facts import KernelFacts

DAMOS_MIN = (6, 11)


@dataclass(frozen=True)
class Choice:
    engine: str
    reason: str
    conflicts: tuple[str, ...] = ()


def choose(
    requested: str,
    k: KernelFacts,
    foreign_kdamonds: list[str],
    tiering_by_other: str | None,
    damon_blocked: str | None = None,
) -> Choice:
    """The engine to run; `damon_blocked` says why no sysfs kdamond can start here (DAMON_STAT kept running)."""
    conflicts = []
    if foreign_kdamonds:
        conflicts.append(f"DAMON in use by another tool ({', '.join(foreign_kdamonds)}): cxltierd leaves it alone")
    if tiering_by_other:
        conflicts.append(tiering_by_other)
    damon_free = k.damon.sysfs and not foreign_kdamonds and not damon_blocked
    damos_ok = damon_free and k.version is not None and k.version >= DAMOS_MIN
    nb_ok = k.numa_balancing is not None
    release = k.release or "unknown"
    why_not = {
        "damos": None
        if damos_ok
        else "needs DAMON sysfs not in use by another tool and a kernel >= 6.11 "
        f"(kernel {release}, DAMON {'busy' if foreign_kdamonds else 'present' if k.damon.sysfs else 'absent'})",
        "move_pages": None if damon_free else "needs DAMON sysfs (vaddr tracking) not in use by another tool",
    }
    if damon_blocked:
        why_not["damos"] = why_not["move_pages"] = f"needs DAMON sysfs kdamonds, and {damon_blocked}"
    why_not |= {
        "numa_balancing": None if nb_ok else "needs the kernel.numa_balancing sysctl (CONFIG_NUMA_BALANCING)",
        "simulated": "is the emulated backend's engine (--backend emulated)",
    }
    if requested != "auto":
        if requested not in why_not:
            raise CxltierdError(f"unknown engine {requested!r}")
        problem = why_not[requested]
        if problem:
            raise CxltierdError(f"engine {requested} cannot run here: it {problem}")
        return Choice(requested, "asked for in the policy", tuple(conflicts))
    if tiering_by_other and nb_ok:
        return Choice(
            "numa_balancing", "the kernel's NUMA-balancing tiering is already on: watching it", tuple(conflicts)
        )
    if damos_ok:
        return Choice("damos", f"DAMON sysfs with DAMOS migrate actions (kernel {release})", tuple(conflicts))
    if damon_free:
        return Choice(
            "move_pages", f"DAMON sysfs without DAMOS migrate actions (kernel {release} < 6.11)", tuple(conflicts)
        )
    if nb_ok:
        why = "DAMON in use by another tool" if foreign_kdamonds else damon_blocked or "no DAMON sysfs"
        return Choice("numa_balancing", f"{why}; the kernel's NUMA-balancing tiering", tuple(conflicts))
    raise CxltierdError("no engine can run on this kernel: no DAMON sysfs and no kernel.numa_balancing sysctl")
