"""The one place that wires cxltierd together: settings -> Runtime (topology, engine, event source, policy).

Backends:
- `host`: HostFS over the real root, the engine chosen by cxltierd.engines.select, udev events for hotplug;
- `emulated`: HostFS over a private copy of a fixture host, the simulated memory system as tracker and migrator,
  scripted hotplug from the scenario applied to that copy (so re-discovery is the same code as on a host);
- `auto`: the host when it has more than one memory tier, else the emulated host, saying so in the log.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cxltierd.discovery import discover, read_vmstat
from cxltierd.engines.base import Migrator, Tracker
from cxltierd.errors import ConfigError, CxltierdError
from cxltierd.facts import HostFacts
from cxltierd.hostfs import HostFS
from cxltierd.hotplug import EventSource
from cxltierd.policy.schema import DEFAULT_PATH, Policy, load_policy
from cxltierd.render import memdev_json, region_json
from cxltierd.topology import Topology, classify

log = logging.getLogger("cxltierd")

DEFAULT_SCENARIO = "hotset-shift"
STATE_DIR = "/run/cxltierd"


@dataclass
class Settings:
    backend: str = "auto"  # auto | host | emulated
    config: str | None = None  # policy file; None: DEFAULT_PATH when it exists, else built-in defaults
    scenario: str | None = None  # emulated backend: scenario name or YAML file
    root: str | None = None  # host backend: root of /sys and /proc; emulated: the host tree to copy
    seed: int | None = None
    dry_run: bool = False
    state_dir: str = STATE_DIR  # where engines record what they own (kdamonds, saved sysctls)


@dataclass
class Runtime:
    """Everything the daemon drives, built by build()."""

    backend: str
    fs: HostFS
    facts: HostFacts
    topology: Topology
    policy: Policy
    policy_path: str | None
    tracker: Tracker
    migrator: Migrator
    engine: str
    engine_reason: str
    conflicts: list[str] = field(default_factory=list)
    events: EventSource | None = None  # udev (host backend)
    scripted: Callable[[float], list[str]] | None = None  # emulated backend: hotplug events due by now
    counters: Callable[[], dict[str, int]] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    dry_run: bool = False
    sim: Any = None  # the SimulatedMemory of the emulated backend
    state_dir: str = STATE_DIR

    def load_policy(self) -> Policy:
        return read_policy(self.policy_path, self.dry_run)

    def classify(self, facts: HostFacts) -> Topology:
        topo = classify(facts, self.policy.tiers.overrides)
        if self.sim is not None:
            from cxltierd.emulate import simulated_topology

            topo = simulated_topology(self.sim.scenario, topo)
        return topo

    def rediscover(self) -> Topology:
        self.facts = discover(self.fs)
        for w in self.facts.warnings:
            log.warning("discovery: %s", w)
        self.topology = self.classify(self.facts)
        return self.topology

    def pick_engine(self) -> bool:
        """Host backend on the idle engine: choose a real one now that there is a second tier. True if swapped."""
        if self.backend != "host" or self.engine != "none" or len(self.topology.tiers) < 2:
            return False
        tracker, migrator, choice = host_engine(self.fs, self.facts, self.topology, self.policy, Path(self.state_dir))
        self.tracker, self.migrator = tracker, migrator
        self.engine, self.engine_reason, self.conflicts = choice.engine, choice.reason, list(choice.conflicts)
        return True

    def kernel_counters(self) -> dict[str, int]:
        return self.counters() if self.counters else read_vmstat(self.fs)

    def memdevs(self) -> list[dict[str, Any]]:
        return [memdev_json(m) for m in self.facts.memdevs]

    def regions(self) -> list[dict[str, Any]]:
        return [region_json(g, self.facts.dax) for g in self.facts.regions]

    def close(self) -> None:
        for fn in self.cleanup:
            fn()
        self.cleanup = []


def read_policy(path: str | None, dry_run: bool = False) -> Policy:
    """The policy at `path`; with no path, DEFAULT_PATH if it exists, else the built-in defaults."""
    if path is None:
        policy = Policy() if not os.path.exists(DEFAULT_PATH) else load_policy(DEFAULT_PATH)
    else:
        policy = load_policy(path)
    if dry_run:
        policy = Policy(**{**policy.__dict__, "dry_run": True})
    return policy


def build(settings: Settings) -> Runtime:
    """Resolve the backend and build its runtime. Raises CxltierdError (one line) when it cannot."""
    policy = read_policy(settings.config, settings.dry_run)
    path = settings.config if settings.config is not None else (DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None)
    backend = settings.backend
    if backend not in ("auto", "host", "emulated"):
        raise CxltierdError(f"unknown backend {backend!r} (auto, host, emulated)")
    if backend == "auto":
        fs = HostFS(settings.root or "/")
        try:
            facts = discover(fs)
            tiers = classify(facts, policy.tiers.overrides).tiers
        except CxltierdError as e:
            tiers = ()
            log.info("discovery of %s failed (%s)", fs.root, e)
        if len(tiers) > 1:
            backend = "host"
        else:
            log.warning(
                "this host has %s memory tier%s (%s): running the emulated host instead (--backend host to insist)",
                len(tiers) or "no",
                "" if len(tiers) == 1 else "s",
                ", ".join(t.name for t in tiers) or "none",
            )
            backend = "emulated"
            settings = replace(settings, root=None)  # --root named the real host, not an emulated host tree
    rt = _host(settings, policy) if backend == "host" else _emulated(settings, policy)
    rt.policy_path = path
    rt.dry_run = settings.dry_run
    return rt


def _emulated(settings: Settings, policy: Policy) -> Runtime:
    from cxltierd.emulate import SimulatedMemory, host_root, read_scenario
    from cxltierd.emulate.tree import apply_hotplug, copy_tree

    scenario = read_scenario(settings.scenario or DEFAULT_SCENARIO)
    tmp = Path(tempfile.mkdtemp(prefix="cxltierd-emulated-"))
    try:
        root = copy_tree(Path(settings.root) if settings.root else host_root(scenario), tmp / "root")
        fs = HostFS(root)
        facts = discover(fs)
        host_topo = classify(facts, policy.tiers.overrides)
        sim = SimulatedMemory(scenario, host_topo, seed=settings.seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seen = [0]

    def scripted(now: float) -> list[str]:
        """Hotplug the simulator did since the last call, applied to the tree copy."""
        changes: list[tuple[str, int]] = []
        for rec in sim.hotplug_log[seen[0] :]:
            if rec.ok:
                changes.append((rec.action, rec.node))
            else:
                log.warning("scripted hotplug at %gs: %s", rec.at, rec.message)
        seen[0] = len(sim.hotplug_log)
        return apply_hotplug(root, changes)

    def counters() -> dict[str, int]:
        base = read_vmstat(fs)
        st = sim.stats()
        base["pgmigrate_success"] = base.get("pgmigrate_success", 0) + sum(st.migrated_pages.values())
        base["pgmigrate_fail"] = base.get("pgmigrate_fail", 0) + sum(st.failed_pages.values())
        return base

    log.info("emulated host %s, scenario %s (%s)", scenario.host, scenario.name, scenario.source)
    rt = Runtime(
        backend="emulated",
        fs=fs,
        facts=facts,
        topology=sim.topology,
        policy=policy,
        policy_path=None,
        tracker=sim,
        migrator=sim,
        engine="simulated",
        engine_reason=f"emulated host, scenario {scenario.name}",
        scripted=scripted,
        counters=counters,
        cleanup=[lambda: shutil.rmtree(tmp, ignore_errors=True)],
        sim=sim,
    )
    return rt


def _host(settings: Settings, policy: Policy) -> Runtime:
    fs = HostFS(settings.root or "/")
    facts = discover(fs)
    for w in facts.warnings:
        log.warning("discovery: %s", w)
    topology = classify(facts, policy.tiers.overrides)
    tracker, migrator, choice = host_engine(fs, facts, topology, policy, Path(settings.state_dir))
    events: EventSource | None = None
    if fs.root == Path("/"):
        from cxltierd.hotplug import UdevEvents

        try:
            events = UdevEvents()
        except CxltierdError as e:
            log.warning("%s", e)
    return Runtime(
        backend="host",
        fs=fs,
        facts=facts,
        topology=topology,
        policy=policy,
        policy_path=None,
        tracker=tracker,
        migrator=migrator,
        engine=choice.engine,
        engine_reason=choice.reason,
        conflicts=list(choice.conflicts),
        events=events,
        state_dir=settings.state_dir,
    )


def host_engine(fs: HostFS, facts: HostFacts, topology: Topology, policy: Policy, state: Path) -> tuple[Any, Any, Any]:
    """(tracker, migrator, Choice) for the real host: the idle engine while there is one memory tier."""
    from cxltierd.engines.damon import Kdamonds
    from cxltierd.engines.numa_balancing import NumaBalancingEngine
    from cxltierd.engines.select import Choice, choose

    if len(topology.tiers) < 2:
        from cxltierd.engines.idle import IdleEngine

        names = ", ".join(t.name for t in topology.tiers) or "none"
        idle = IdleEngine(fs, list(topology.node_ids))
        return idle, idle, Choice("none", f"one memory tier ({names}): nothing to place until a slower tier appears")
    kdamonds = Kdamonds(fs, state / "kdamonds.json")
    nb = NumaBalancingEngine(fs, state / "numa_balancing.json")
    foreign = kdamonds.foreign() if kdamonds.available() else []
    tiering = nb.check() if facts.kernel.numa_balancing is not None else None
    choice = choose(policy.engine, facts.kernel, foreign, tiering)
    tracker: Any
    migrator: Any
    if choice.engine == "numa_balancing":
        tracker = migrator = nb
    elif choice.engine == "damos":
        from cxltierd.engines.damos import DamosEngine

        tracker = migrator = DamosEngine(fs, kdamonds)
    elif choice.engine == "move_pages":
        from cxltierd.engines.damon_tracker import DamonTracker
        from cxltierd.engines.move_pages import MovePagesEngine

        tracker = DamonTracker(fs, policy, kdamonds, list(topology.node_ids))
        migrator = MovePagesEngine()
    else:
        raise ConfigError(f"engine {choice.engine} needs --backend emulated")
    return tracker, migrator, choice
