"""The one place that wires cxltierd together: settings -> (Runtime, Loop).

The Runtime is the wiring, fixed for the daemon's life (host filesystem, classification, engine factory, event
sources); the Loop owns the live state (policy, topology, engines) and takes new state whole through swap().
Backends:
- `host`: HostFS over the real root, the engine chosen by the registry's probes (cxltierd.engines.select), udev
  events for hotplug;
- `emulated`: HostFS over a private copy of a fixture host, the simulated memory system as tracker and migrator,
  its scripted hotplug applied to that copy and delivered as an event source like udev (so re-discovery is the same
  code as on a host);
- `auto`: the host when it has more than one memory tier, else the emulated host, saying so in the log.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cxltierd.discovery import discover, read_vmstat
from cxltierd.discovery.cgroups import read_numa_stat
from cxltierd.discovery.hotplug import EventSource
from cxltierd.engines import registry
from cxltierd.engines.base import Engines
from cxltierd.engines.damon_stat import DamonStat
from cxltierd.engines.interleave import INTERLEAVE_FILE, WeightedInterleave
from cxltierd.engines.registry import Wiring
from cxltierd.engines.select import choose
from cxltierd.errors import CxltierdError
from cxltierd.facts import HostFacts
from cxltierd.failover import Failover
from cxltierd.hostfs import HostFS
from cxltierd.loop import Loop
from cxltierd.policy.schema import DEFAULT_PATH, Policy, load_policy
from cxltierd.topology import Topology, classify

if TYPE_CHECKING:
    from cxltierd.emulate.memory import SimulatedMemory
    from cxltierd.emulate.spec import Scenario

log = logging.getLogger("cxltierd")

DEFAULT_SCENARIO = "hotset-failover"
STATE_DIR = "/run/cxltierd"


@dataclass
class Settings:
    """What the command line asks for: the backend, the policy file, the emulated host's scenario and seed, --root."""

    backend: str = "auto"  # auto | host | emulated
    config: str | None = None  # policy file; None: DEFAULT_PATH when it exists, else built-in defaults
    scenario: str | None = None  # emulated backend: scenario name or YAML file
    root: str | None = None  # host backend: root of /sys and /proc; emulated: the host tree to copy
    seed: int | None = None
    dry_run: bool = False
    state_dir: str = STATE_DIR  # where engines record what they own (kdamonds, saved sysctls)


@dataclass(frozen=True)
class Runtime:
    """The wiring, fixed for the daemon's life: the host filesystem, how facts become a topology and a topology
    becomes engines, the event sources and the kernel counters. The live state (policy, topology, engines) is the
    loop's (cxltierd.loop.Loop)."""

    backend: str
    fs: HostFS
    policy_path: str | None
    dry_run: bool
    classify: Callable[[HostFacts, Policy], Topology]
    engines_for: Callable[[HostFacts, Topology, Policy], Engines]
    events: tuple[EventSource, ...] = ()
    counters: Callable[[], dict[str, int]] | None = None
    cleanup: tuple[Callable[[], None], ...] = ()
    ras: Failover | None = None  # CXL RAS: health and drains (cxltierd.failover)
    adjust: Callable[[HostFacts], HostFacts] | None = None  # applied to every discovery (the emulated host's scenario)

    def load_policy(self) -> Policy:
        """The policy file read again (reload). Raises ConfigError."""
        return read_policy(self.policy_path, self.dry_run)

    def discover(self) -> HostFacts:
        """A fresh discovery of the host, its warnings logged. Raises CxltierdError."""
        facts = discover(self.fs)
        for w in facts.warnings:
            log.warning("discovery: %s", w)
        return facts if self.adjust is None else self.adjust(facts)

    def idle(self, topology: Topology, policy: Policy, reason: str) -> Engines:
        """The idle engine (reports node memory, moves nothing) for when no real engine can run."""
        return registry.build("none", Wiring(self.fs, topology, policy, Path(STATE_DIR)), reason)

    def kernel_counters(self) -> dict[str, int]:
        """/proc/vmstat counters (plus the simulator's, on the emulated host)."""
        return self.counters() if self.counters else read_vmstat(self.fs)

    def tenant_memory(self, policy: Policy) -> dict[str, dict[int, int]]:
        """Tenant -> node -> bytes (anon + file) from memory.numa_stat, for tenants selected by a cgroup on the host
        backend (the emulated host has no cgroupfs: empty). Unreadable cgroups are left out."""
        if self.backend != "host":
            return {}
        out = {}
        for t in policy.tenants:
            if t.match.cgroup is not None:
                per = read_numa_stat(self.fs, t.match.cgroup)
                if per is not None:
                    out[t.name] = per
        return out

    def close(self) -> None:
        """Close the event sources and remove what the backend made (the emulated tree copy)."""
        for source in self.events:
            source.close()
        if self.ras is not None:
            self.ras.close()
        for fn in self.cleanup:
            fn()


def read_policy(path: str | None, dry_run: bool = False) -> Policy:
    """The policy at `path`; with no path, DEFAULT_PATH if it exists, else the built-in defaults."""
    if path is None:
        policy = Policy() if not os.path.exists(DEFAULT_PATH) else load_policy(DEFAULT_PATH)
    else:
        policy = load_policy(path)
    if dry_run:
        policy = Policy(**{**policy.__dict__, "dry_run": True})
    return policy


def build(settings: Settings) -> tuple[Runtime, Loop]:
    """Resolve the backend and build its wiring and its loop. Raises CxltierdError (one line) when it cannot."""
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
    wiring = _host if backend == "host" else _emulated
    return wiring(settings, policy, path)


def _emulated(settings: Settings, policy: Policy, path: str | None) -> tuple[Runtime, Loop]:
    from cxltierd.emulate import SimulatedMemory, host_root, read_scenario, simulated_topology
    from cxltierd.emulate.events import ScriptedEvents
    from cxltierd.emulate.host import scenario_facts
    from cxltierd.emulate.tree import copy_tree

    scenario = read_scenario(settings.scenario or DEFAULT_SCENARIO)
    tmp = Path(tempfile.mkdtemp(prefix="cxltierd-emulated-"))
    try:
        root = copy_tree(Path(settings.root) if settings.root else host_root(scenario), tmp / "root")
        fs = HostFS(root)
        facts = scenario_facts(scenario, discover(fs))
        sim = SimulatedMemory(scenario, classify(facts, policy.tiers.overrides), seed=settings.seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    engines = Engines("simulated", sim, sim, f"emulated host, scenario {scenario.name}")

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
        policy_path=path,
        dry_run=settings.dry_run,
        classify=lambda f, p: simulated_topology(scenario, classify(f, p.tiers.overrides)),
        engines_for=lambda f, t, p: engines,  # the simulator follows every topology itself
        events=(ScriptedEvents(sim, root),),
        counters=counters,
        cleanup=(lambda: shutil.rmtree(tmp, ignore_errors=True),),
        ras=_emulated_ras(fs, sim, scenario, facts),
        adjust=lambda f: scenario_facts(scenario, f),
    )
    return rt, Loop(sim.topology, engines, policy, facts)


def _host(settings: Settings, policy: Policy, path: str | None) -> tuple[Runtime, Loop]:
    fs = HostFS(settings.root or "/")
    state_dir = Path(settings.state_dir)
    events: tuple[EventSource, ...] = ()
    if fs.root == Path("/"):
        from cxltierd.discovery.hotplug import UdevEvents

        try:
            events = (UdevEvents(),)
        except CxltierdError as e:
            log.warning("%s", e)
    rt = Runtime(
        backend="host",
        fs=fs,
        policy_path=path,
        dry_run=settings.dry_run,
        classify=lambda f, p: classify(f, p.tiers.overrides),
        engines_for=lambda f, t, p: host_engines(fs, f, t, p, state_dir),
        events=events,
        cleanup=(
            lambda: _restore_interleave(fs, state_dir),
            lambda: DamonStat(fs, state_dir / registry.DAMON_STAT_FILE).restore(),
        ),
        ras=_host_ras(fs, state_dir),
    )
    facts = rt.discover()
    topology = rt.classify(facts, policy)
    loop = Loop(topology, rt.engines_for(facts, topology, policy), policy, facts)
    if fs.root == Path("/"):
        loop.bandwidth = _bandwidth_meter(fs, facts)
    return rt, loop


def _bandwidth_meter(fs: HostFS, facts: HostFacts) -> Callable[[float], dict[int, float]] | None:
    """The PMU bandwidth meter's sample function when the host has memory-bandwidth counters (logged either way:
    which source the perf model uses and why), else None. Its counters stay open for the daemon's life."""
    from cxltierd.discovery.pmu import find
    from cxltierd.engines.perfevent import BandwidthMeter

    telemetry = find(fs, facts)
    log.info("bandwidth: %s", telemetry.reason)
    if not telemetry.counters:
        return None
    meter = BandwidthMeter(telemetry.counters)
    for error in meter.open():
        log.warning("bandwidth counter left out: %s", error)
    return meter.sample if meter.nodes() else None


def _emulated_ras(fs: HostFS, sim: SimulatedMemory, scenario: Scenario, facts: HostFacts) -> Failover:
    """The emulated host's RAS: its scenario's ras_events through an emulated tracefs, drained by the simulator."""
    from cxltierd.emulate.ras import ScriptedTrace
    from cxltierd.failover import RegionMover

    base = next((r.resource for r in facts.regions if r.resource is not None), 0)
    return Failover(ScriptedTrace(fs, sim, scenario.ras_events, base), RegionMover(), fs, None)


def _host_ras(fs: HostFS, state_dir: Path) -> Failover:
    from cxltierd.discovery import mailbox
    from cxltierd.discovery.tracefs import TraceInstance
    from cxltierd.failover import STATE_FILE, ProcessMover

    def health(memdev: str) -> dict[str, int | str]:
        return mailbox.read_health(fs, memdev)

    return Failover(TraceInstance(fs), ProcessMover(fs), fs, state_dir / STATE_FILE, health)


def _interleave(fs: HostFS, topology: Topology, policy: Policy, state_dir: Path) -> None:
    """Apply the policy's weighted-interleave weights; a failure is logged, never fatal."""
    try:
        note = WeightedInterleave(fs, state_dir / INTERLEAVE_FILE).apply(topology, policy.interleave, policy.dry_run)
    except CxltierdError as e:
        log.warning("%s", e)
    else:
        if note:
            log.info("%s", note)


def _restore_interleave(fs: HostFS, state_dir: Path) -> None:
    """Give back the weighted-interleave weights cxltierd set; a failure is logged (the other cleanups still run)."""
    try:
        WeightedInterleave(fs, state_dir / INTERLEAVE_FILE).restore()
    except CxltierdError as e:
        log.error("%s", e)


def host_engines(fs: HostFS, facts: HostFacts, topology: Topology, policy: Policy, state_dir: Path) -> Engines:
    """The engine for a real host, chosen by the registry's probes; the idle engine while there is one tier. Sets the
    weighted-interleave weights the policy asks for first (cxltierd.engines.interleave)."""
    _interleave(fs, topology, policy, state_dir)
    if len(topology.tiers) < 2:
        names = ", ".join(t.name for t in topology.tiers) or "none"
        why = f"one memory tier ({names}): nothing to place until a slower tier appears"
        return registry.build("none", Wiring(fs, topology, policy, state_dir), why)
    env = registry.probe_env(fs, facts, state_dir, policy.damon.take_over_damon_stat)
    choice = choose(policy.engine, env)
    # The kernel's DAMON_STAT kdamond keeps every sysfs kdamond from starting: a DAMON engine takes it over (the
    # policy allowed it, or probe_env said why not), any other engine leaves it as it was before cxltierd.
    damon_stat = DamonStat(fs, state_dir / registry.DAMON_STAT_FILE)
    if choice.engine in registry.DAMON_ENGINES:
        try:
            note = damon_stat.take_over()
        except CxltierdError as e:
            choice = choose(policy.engine, replace(env, damon_blocked=str(e)))
        else:
            choice = replace(choice, reason=f"{choice.reason}; {note}") if note else choice
    else:
        damon_stat.restore()
    wiring = Wiring(fs, topology, policy, state_dir, env.damon)
    return registry.build(choice.engine, wiring, choice.reason, choice.conflicts)
