"""`engine: auto`: pick the engine by the registry's probes, and report conflicts instead of fighting them.

Pure: `choose(requested, env)` -> Choice. Order for auto, kernel mechanisms first and move_pages where it must:
1. the kernel's NUMA-balancing tiering is already on (set by someone else): `numa_balancing`, watching only;
2. `damos` (DAMON sysfs free for us, kernel >= 6.11);
3. `move_pages` (DAMON sysfs free for us on an older kernel: DAMON vaddr tracking + batched move_pages(2));
4. `numa_balancing` (kernel.numa_balancing present);
otherwise there is no engine. An engine asked for by name that this kernel cannot run is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxltierd.engines.registry import Env, probes
from cxltierd.errors import CxltierdError


@dataclass(frozen=True)
class Choice:
    """The engine to run, why, and what else is going on that cxltierd leaves alone."""

    engine: str
    reason: str
    conflicts: tuple[str, ...] = ()


def conflicts(env: Env) -> tuple[str, ...]:
    """Other tools' use of the kernel mechanisms, as sentences for the log, `status` and `doctor`."""
    out = []
    if env.foreign_kdamonds:
        out.append(f"DAMON in use by another tool ({', '.join(env.foreign_kdamonds)}): cxltierd leaves it alone")
    if env.tiering_by_other:
        out.append(env.tiering_by_other)
    return tuple(out)


def choose(requested: str, env: Env) -> Choice:
    """The engine for a policy's `engine:` value on this host. Raises CxltierdError when none can run."""
    why_not = probes(env)
    found = conflicts(env)
    release = env.kernel.release or "unknown"
    if requested != "auto":
        if requested not in why_not:
            raise CxltierdError(f"unknown engine {requested!r}")
        problem = why_not[requested]
        if problem:
            raise CxltierdError(f"engine {requested} cannot run here: it {problem}")
        return Choice(requested, "asked for in the policy", found)
    if env.tiering_by_other and why_not["numa_balancing"] is None:
        return Choice("numa_balancing", "the kernel's NUMA-balancing tiering is already on: watching it", found)
    if why_not["damos"] is None:
        return Choice("damos", f"DAMON sysfs with DAMOS migrate actions (kernel {release})", found)
    if why_not["move_pages"] is None:
        return Choice("move_pages", f"DAMON sysfs without DAMOS migrate actions (kernel {release} < 6.11)", found)
    if why_not["numa_balancing"] is None:
        why = "DAMON in use by another tool" if env.foreign_kdamonds else env.damon_blocked or "no DAMON sysfs"
        return Choice("numa_balancing", f"{why}; the kernel's NUMA-balancing tiering", found)
    raise CxltierdError("no engine can run on this kernel: no DAMON sysfs and no kernel.numa_balancing sysctl")
