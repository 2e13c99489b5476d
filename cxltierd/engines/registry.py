"""The engine registry: each engine's name, its capability probe and its factory.

A probe is a pure function of what the host offers (`Env`: kernel facts, kdamonds of other tools, NUMA-balancing
tiering set by someone else) that returns None when the engine can run here, else why not ("needs ..."). `engine:
auto` (cxltierd.engines.select) and `doctor` both read the probes; `build` makes the chosen engine's tracker and
migrator. New engines and kernel features plug in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cxltierd.engines.base import Engines, Migrator, Tracker
from cxltierd.engines.damon_probe import DamonFeatures, probe
from cxltierd.facts import HostFacts, KernelFacts
from cxltierd.hostfs import HostFS
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

DAMON_ENGINES = ("damos", "move_pages")  # the engines that need sysfs kdamonds (and so DAMON_STAT off)
DAMON_STAT_FILE = "damon_stat.json"  # in the state dir: DAMON_STAT's value before cxltierd turned it off
DAMOS_MIN = (6, 11)  # DAMOS migrate_hot / migrate_cold, when DAMON could not be asked
DAMOS_ACTIONS = ("migrate_hot", "migrate_cold")
DAMOS_FILTERS = ("young", "addr", "memcg")


@dataclass(frozen=True)
class Env:
    """What the probes look at."""

    kernel: KernelFacts
    foreign_kdamonds: tuple[str, ...] = ()  # kdamonds another tool runs
    tiering_by_other: str | None = None  # NUMA-balancing tiering mode set by someone else (a sentence), or None
    damon: DamonFeatures = field(default_factory=DamonFeatures)  # what DAMON accepted when asked (probed: was asked)
    damon_blocked: str | None = None  # why no sysfs kdamond can start here (the kernel's DAMON_STAT kept running)


@dataclass(frozen=True)
class Wiring:
    """What a factory builds an engine from."""

    fs: HostFS
    topology: Topology
    policy: Policy
    state_dir: Path  # where engines record what they own (kdamonds, saved sysctls)
    damon: DamonFeatures = field(default_factory=DamonFeatures)  # what DAMON accepted (the probe)


Probe = Callable[[Env], str | None]
Factory = Callable[[Wiring], tuple[Tracker, Migrator]]


@dataclass(frozen=True)
class Spec:
    """One engine: what it is, whether it can run (probe), and how to build it (None: not on a real host)."""

    name: str
    summary: str
    probe: Probe
    build: Factory | None
    uses: Callable[[Wiring], tuple[str, ...]] = lambda w: ()  # the kernel features it drives, for `status`


def _damon_free(env: Env) -> bool:
    return env.kernel.damon.sysfs and not env.foreign_kdamonds and not env.damon_blocked


def _damon_state(env: Env) -> str:
    return "busy" if env.foreign_kdamonds else "present" if env.kernel.damon.sysfs else "absent"


def _probe_damos(env: Env) -> str | None:
    """DAMOS needs the migrate actions and the young, addr and memcg filters; asked of the kernel where it could be,
    else inferred from the version (>= 6.11)."""
    k, f = env.kernel, env.damon
    if env.damon_blocked:
        return f"needs DAMON sysfs kdamonds, and {env.damon_blocked}"
    if f.probed:
        missing = [a for a in DAMOS_ACTIONS if a not in f.actions] + [x for x in DAMOS_FILTERS if x not in f.filters]
        if _damon_free(env) and not missing:
            return None
        if missing:
            return f"needs DAMOS {', '.join(missing)}, which this kernel ({k.release or 'unknown'}) refused"
    elif _damon_free(env) and k.version is not None and k.version >= DAMOS_MIN:
        return None
    return (
        "needs DAMON sysfs not in use by another tool and a kernel >= 6.11 "
        f"(kernel {k.release or 'unknown'}, DAMON {_damon_state(env)})"
    )


def _probe_move_pages(env: Env) -> str | None:
    if env.damon_blocked:
        return f"needs DAMON sysfs kdamonds, and {env.damon_blocked}"
    return None if _damon_free(env) else "needs DAMON sysfs (vaddr tracking) not in use by another tool"


def _probe_numa_balancing(env: Env) -> str | None:
    return (
        None
        if env.kernel.numa_balancing is not None
        else "needs the kernel.numa_balancing sysctl (CONFIG_NUMA_BALANCING)"
    )


def _build_damos(w: Wiring) -> tuple[Tracker, Migrator]:
    from cxltierd.engines.damon import Kdamonds
    from cxltierd.engines.damos import DamosEngine

    e = DamosEngine(w.fs, Kdamonds(w.fs, w.state_dir / "kdamonds.json"), w.damon)
    return e, e


def _damos_uses(w: Wiring) -> tuple[str, ...]:
    from cxltierd.engines.damos import uses

    return uses(w.damon, w.policy)


def _build_move_pages(w: Wiring) -> tuple[Tracker, Migrator]:
    from cxltierd.engines.damon import Kdamonds
    from cxltierd.engines.damon_tracker import DamonTracker
    from cxltierd.engines.move_pages import MovePagesEngine

    kdamonds = Kdamonds(w.fs, w.state_dir / "kdamonds.json")
    tracker = DamonTracker(
        w.fs, w.policy, kdamonds, list(w.topology.node_ids), max_processes=w.policy.damon.max_processes
    )
    return tracker, MovePagesEngine()


def _build_numa_balancing(w: Wiring) -> tuple[Tracker, Migrator]:
    from cxltierd.engines.numa_balancing import NumaBalancingEngine

    e = NumaBalancingEngine(w.fs, w.state_dir / "numa_balancing.json")
    return e, e


def _build_idle(w: Wiring) -> tuple[Tracker, Migrator]:
    from cxltierd.engines.idle import IdleEngine

    e = IdleEngine(w.fs, list(w.topology.node_ids))
    return e, e


REGISTRY: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            "damos",
            "the kernel migrates: DAMOS migrate_hot/migrate_cold schemes",
            _probe_damos,
            _build_damos,
            _damos_uses,
        ),
        Spec(
            "move_pages",
            "DAMON vaddr tracking, cxltierd decides, batched move_pages(2)",
            _probe_move_pages,
            _build_move_pages,
            lambda w: ("damon:vaddr", "move_pages(2)"),
        ),
        Spec(
            "numa_balancing",
            "the kernel's NUMA-balancing tiering mode, configured and watched",
            _probe_numa_balancing,
            _build_numa_balancing,
            lambda w: ("numa_balancing=2", "demotion_enabled", "promote_rate_limit_MBps"),
        ),
        Spec(
            "simulated",
            "the simulated memory system",
            lambda env: "is the emulated backend's engine (--backend emulated)",
            None,
        ),
        Spec("none", "idle: one memory tier, nothing to place", lambda env: None, _build_idle),
    )
}
SELECTABLE = ("damos", "move_pages", "numa_balancing", "simulated")  # what a policy's `engine:` may name


def probe_env(fs: HostFS, facts: HostFacts, state_dir: Path, take_over_damon_stat: bool = True) -> Env:
    """Read what the probes need beyond the kernel facts: other tools' kdamonds, who set NUMA-balancing tiering,
    whether the kernel's DAMON_STAT keeps sysfs kdamonds from starting, and what DAMON accepts."""
    from cxltierd.engines.damon import Kdamonds
    from cxltierd.engines.damon_stat import DamonStat
    from cxltierd.engines.numa_balancing import NumaBalancingEngine

    kdamonds = Kdamonds(fs, state_dir / "kdamonds.json")
    foreign = tuple(kdamonds.foreign()) if kdamonds.available() else ()
    nb = NumaBalancingEngine(fs, state_dir / "numa_balancing.json")
    tiering = nb.check() if facts.kernel.numa_balancing is not None else None
    features = probe(fs) if facts.kernel.damon.sysfs and not foreign else DamonFeatures(why_not="DAMON busy or absent")
    blocked = DamonStat(fs, state_dir / DAMON_STAT_FILE).blocker(take_over_damon_stat)
    return Env(facts.kernel, foreign, tiering, features, blocked)


def probes(env: Env) -> dict[str, str | None]:
    """Engine name -> None (can run here) or why not, for every selectable engine."""
    return {name: REGISTRY[name].probe(env) for name in SELECTABLE}


def build(name: str, wiring: Wiring, reason: str = "", conflicts: tuple[str, ...] = ()) -> Engines:
    """The named engine, built for a real host. Raises KeyError for an unknown name, ValueError for `simulated`."""
    factory = REGISTRY[name].build
    if factory is None:
        raise ValueError(f"engine {name} is not built for a real host")
    tracker, migrator = factory(wiring)
    return Engines(name, tracker, migrator, reason, conflicts, REGISTRY[name].uses(wiring))
