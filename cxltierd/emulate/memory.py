"""SimulatedMemory: a memory system of NUMA nodes holding processes' regions, as a Tracker and a Migrator.

Time is passed in. `sample(now)` advances the simulation to `now` and reports what a DAMON-like tracker would see
over the interval since the previous sample; `apply(plan, now)` starts the plan's copies one after another at the
scenario's migration bandwidth. Between two calls, everything that happens at a known time is processed in time
order: copies completing (a region serves its accesses from the source until its copy is done; the target's room
is reserved when the copy starts), growth allocations, processes starting and exiting, and scripted hotplug.

SimulatedMemory is a facade over its parts, each in its own module:
- store.py     where every region is and how full every node is (allocation, placement order);
- schedule.py  the events due at known times;
- sampler.py   accesses credited to nodes per interval and the noisy observation the tracker reports;
- copies.py    the sequential copy engine behind `apply`;
- hotplug.py   the scenario's scripted node removals and additions;
- oracle.py    true access rates, now or over any interval (for baselines, benchmarks and tests).
The simulation runs on scenario time (0 at the scenario's start); every time in or out of this class is on the
caller's clock (`start` at scenario time 0) and never goes backwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cxltierd.emulate import oracle
from cxltierd.emulate.copies import CopyEngine
from cxltierd.emulate.host import check_nodes, simulated_topology
from cxltierd.emulate.hotplug import Hotplug, HotplugRecord
from cxltierd.emulate.sampler import Sampler
from cxltierd.emulate.schedule import EXIT, HOTPLUG, START, Schedule
from cxltierd.emulate.spec import Scenario
from cxltierd.emulate.store import VBASE, Proc, Store
from cxltierd.model import PAGE_SIZE, Gates, Outcome, Plan, Process, Sample
from cxltierd.policy.perf import node_perf
from cxltierd.topology import Topology

__all__ = ["VBASE", "HotplugRecord", "SimStats", "SimulatedMemory"]


@dataclass(frozen=True)
class SimStats:
    """Cumulative accounting since the simulation started."""

    time: float
    total_accesses: float
    fast_accesses: float  # served by the fastest tier
    node_accesses: Mapping[int, float]
    migrated_bytes: Mapping[tuple[int, int], int]  # (src, dst) -> bytes of completed copies
    migrated_pages: Mapping[tuple[int, int], int]
    failed_pages: Mapping[str, int]  # reason -> pages, refused moves and copies cancelled in flight
    evacuated_bytes: Mapping[tuple[int, int], int]  # moved by the kernel when a node was removed
    allocation_waits: int  # regions that found no room when allocated and had to wait
    latency: float = 0.0  # accesses x the serving node's loaded latency (ns), summed (cxltierd.policy.perf)

    @property
    def fast_share(self) -> float | None:
        """Share of all accesses the fastest tier served; None before any access."""
        return self.fast_accesses / self.total_accesses if self.total_accesses > 0 else None

    @property
    def mean_latency_ns(self) -> float | None:
        """Access-weighted mean loaded latency in ns; None before any access."""
        return self.latency / self.total_accesses if self.total_accesses > 0 else None


class SimulatedMemory:
    """A simulated memory system: implements both Tracker (sample) and Migrator (configure, apply)."""

    name = "simulated"
    kernel_executed = False

    def __init__(self, scenario: Scenario, topology: Topology, seed: int | None = None, start: float = 0.0) -> None:
        """`topology`: the scenario's host (its nodes are cut down to the scenario's); `start`: the caller's clock
        value at scenario time 0 (every `now` passed in is on the caller's clock)."""
        self.scenario = scenario
        check_nodes(scenario, topology)
        self.topology = simulated_topology(scenario, topology)
        self.seed = scenario.seed if seed is None else seed
        self.start = start
        self.region_size = scenario.region_size
        self.bandwidth = float(scenario.migration_bandwidth)
        self.fast_nodes = frozenset(self.topology.tiers[0].nodes) if self.topology.tiers else frozenset()
        self._store = Store(scenario, self.topology, self.seed)
        size = max(self._store.capacity) + 1
        self._sampler = Sampler(self.seed, scenario.sample_fraction, self.region_size, self.fast_nodes, size)
        self._sampler.perf = node_perf(self.topology)
        self._schedule = Schedule()
        self._copies = CopyEngine(self._store, self._schedule, self._sampler, self.bandwidth)
        self._hotplug = Hotplug(self._store, self._copies, self._sampler, start)
        for p in self._store.procs:
            self._schedule.push(p.spec.start_at, START, "start", p)
            if p.spec.exit_at is not None:
                self._schedule.push(p.spec.exit_at, EXIT, "exit", p)
        for e in scenario.events:
            self._schedule.push(e.at, HOTPLUG, e.action, e.node)
        self._now = 0.0  # scenario time
        self._advance(0.0)

    # -------------------------------------------------------------------------------------------------------
    # Tracker and Migrator.

    def sample(self, now: float) -> Sample:
        """Advance to `now` and report every live region's observed heat since the previous sample."""
        t = self._scenario_time(now)
        self._advance(t)
        regions = self._sampler.take(self._store.procs, t)
        st = self._store
        live = sorted(st.live)
        return Sample(
            regions=tuple(regions),
            free_bytes={n: st.free(n) for n in live},
            total_bytes={n: st.capacity[n] for n in live},
            processes={p.pid: Process(p.pid, p.spec.name, p.spec.cmdline, p.spec.cgroup) for p in st.procs if p.live},
            fast_share=self._sampler.last_share,
            resolution=self._sampler.resolution,
        )

    def gate(self, gates: Gates) -> None:
        """Only kernel-executed engines are gated."""

    def configure(self, topology: Topology, policy: Any) -> None:
        """Nothing to configure: the simulator takes its plans through apply()."""

    def apply(self, plan: Plan, now: float) -> Outcome:
        """Queue the plan's copies, one after another at the migration bandwidth (after any still running).

        A move is accepted when its target will have room at the moment its copy starts, that is once every copy
        queued before it is done (a demotion earlier in the plan makes room for a promotion after it). The room is
        reserved when the copy starts; the source is freed when it completes.
        """
        t0 = self._scenario_time(now)
        self._advance(t0)
        return self._copies.queue(plan, t0)

    def stop(self) -> None:
        """Nothing to release."""

    # -------------------------------------------------------------------------------------------------------
    # Inspection (benchmarks, tests, the emulated backend's status).

    @property
    def now(self) -> float:
        """The caller's clock value the simulation has reached."""
        return self.start + self._now

    @property
    def busy_until(self) -> float:
        """When the last started copy completes (caller's clock)."""
        return self.start + self._copies.busy_until

    @property
    def hotplug_log(self) -> list[HotplugRecord]:
        """Every scripted hotplug event so far, in order (times on the caller's clock)."""
        return self._hotplug.log

    @property
    def on_hotplug(self) -> list[Callable[[], None]]:
        """Listeners called after each new hotplug_log record (the scripted event source adds one)."""
        return self._hotplug.listeners

    def stats(self) -> SimStats:
        """Cumulative accounting since the simulation started."""
        sm, st, cp = self._sampler, self._store, self._copies
        return SimStats(
            time=self.now,
            total_accesses=sm.total,
            fast_accesses=sm.fast,
            node_accesses={n: sm.node_total[n] for n in sorted(st.capacity)},
            migrated_bytes=dict(cp.migrated),
            migrated_pages={k: v // PAGE_SIZE for k, v in cp.migrated.items()},
            failed_pages=dict(cp.failed),
            evacuated_bytes=dict(self._hotplug.evacuated),
            allocation_waits=st.waits,
            latency=sm.latency,
        )

    def live_nodes(self) -> tuple[int, ...]:
        """The nodes online now, in id order."""
        return tuple(sorted(self._store.live))

    def live_topology(self) -> Topology:
        """The simulated topology without removed nodes (what re-discovery would find after hotplug)."""
        return self._store.live_topology(self.topology)

    def placement(self) -> dict[tuple[int, int], int]:
        """Node of every allocated region of every live process, by key (pid, start)."""
        return self._store.placement()

    def region_sizes(self) -> dict[tuple[int, int], int]:
        """Size of every allocated region of every live process, by key (pid, start)."""
        return self._store.region_sizes()

    def in_flight(self) -> dict[tuple[int, int], tuple[int, int, float, float]]:
        """Copies queued or running: key -> (src, dst, start, completion) with times on the caller's clock.
        A copy holds room on dst from its start."""
        return self._copies.in_flight(self.start)

    def used_bytes(self) -> dict[int, int]:
        """Managed bytes held per node (regions there plus room reserved for copies in flight) + unmanaged use."""
        return self._store.used_bytes()

    def capacity(self) -> dict[int, int]:
        """Capacity of every node of the scenario, online or not."""
        return dict(self._store.capacity)

    def rates_at(self, when: float) -> dict[tuple[int, int], float]:
        """True accesses/s at caller time `when` of every region that exists then. Pure: state is not touched."""
        return oracle.rates_at(self._store.procs, self.region_size, when - self.start)

    def mean_rates(self, t0: float, t1: float) -> dict[tuple[int, int], float]:
        """True mean accesses/s over [t0, t1] (caller's clock) of the regions that exist at t0 or appear before t1.
        Pure: an oracle can ask about the future."""
        return oracle.mean_rates(self._store.procs, self.region_size, t0 - self.start, t1 - self.start)

    def true_rates(self) -> dict[tuple[int, int], float]:
        """True accesses/s of every region now."""
        return self.rates_at(self.now)

    # -------------------------------------------------------------------------------------------------------
    # Time and events.

    def _scenario_time(self, now: float) -> float:
        t = now - self.start
        if t < self._now - 1e-9:
            raise ValueError(f"time went backwards: {now} is before {self.now}")
        return max(t, self._now)

    def _advance(self, t: float) -> None:
        """Process everything that happens up to and including t, in time order."""
        for when, _, _, kind, payload in self._schedule.due(t, self._store.procs):
            if kind == "done":
                proc, i, copy = payload
                self._copies.complete(proc, i, copy, when)
            elif kind == "begin":
                proc, i, copy = payload
                self._copies.begin(proc, i, copy)
            elif kind == "birth":
                proc, i = payload
                if proc.live:
                    self._store.allocate(proc, i)
            elif kind == "start":
                self._store.start(payload)
            elif kind == "exit":
                self._exit(payload, when)
            elif kind == "remove":
                self._hotplug.remove_node(payload, when)
            elif kind == "add":
                self._hotplug.add_node(payload, when)
        self._now = t
        self._store.retry_waiting()

    def _exit(self, p: Proc, t: float) -> None:
        """The process exits at t: its accesses so far are credited, its regions freed, its copies cancelled."""
        if not p.live:
            return
        self._sampler.settle_exit(p, t)
        self._store.release(p)
        for c in p.copying.values():
            self._copies.cancel(c, "process_gone", f"pid {p.pid} ({p.spec.name}) exited during migration")
        p.copying.clear()
        p.pre, p.waiting, p.live = {}, [], False
