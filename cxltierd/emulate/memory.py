"""SimulatedMemory: a memory system of NUMA nodes holding processes' regions, as a Tracker and a Migrator.

Time is passed in. `sample(now)` advances the simulation to `now` and reports what a DAMON-like tracker would see
over the interval since the previous sample; `apply(plan, now)` starts the plan's copies one after another at the
scenario's migration bandwidth. Between two calls, everything that happens at a known time is processed in time
order: copies completing (a region serves its accesses from the source until its copy is done; the target's room
is reserved when the copy starts), growth allocations, processes starting and exiting, and scripted hotplug.

Accesses are never simulated one by one: each region's true accesses over an interval come in closed form from
its workload (cxltierd.emulate.workload), split at the moment the region changes node. The observed rate adds
Poisson sampling noise (a tracker seeing `sample_fraction` of the accesses), drawn from random.Random(seed).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cxltierd.emulate.host import check_nodes, simulated_topology
from cxltierd.emulate.scenario import PAGE_SIZE
from cxltierd.emulate.spec import Placement, Scenario
from cxltierd.emulate.workload import ProcessWorkload
from cxltierd.model import Move, Outcome, Plan, Process, RegionHeat, Sample, Transfer
from cxltierd.topology import Tier, Topology
from cxltierd.units import format_size

VBASE = 0x7F0000000000  # virtual address of every process's first region

# Event priorities at equal times: room is freed (exits, hotplug, completed copies) before it is taken.
_EXIT, _HOTPLUG, _DONE, _BEGIN, _START, _BIRTH = range(6)


@dataclass(frozen=True)
class HotplugRecord:
    """What a scripted hotplug event did."""

    at: float
    node: int
    action: str  # "remove" or "add"
    ok: bool
    evacuated: Mapping[int, int] = field(default_factory=dict)  # target node -> bytes the kernel moved off
    message: str = ""


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

    @property
    def fast_share(self) -> float | None:
        return self.fast_accesses / self.total_accesses if self.total_accesses > 0 else None


@dataclass
class _Copy:
    start: float  # the copy engine is sequential: a copy starts when the one before it is done
    done: float
    src: int
    dst: int
    size: int
    begun: bool = False  # room reserved on dst
    cancelled: bool = False


class _Proc:
    """Mutable per-process state: where each region is and what the tracker last saw."""

    def __init__(self, work: ProcessWorkload) -> None:
        self.work = work
        self.spec = work.spec
        self.pid = work.spec.pid
        n = work.n
        self.node = [-1] * n  # -1: not allocated
        self.high = 0  # regions [0, high) may be allocated
        self.level = [0.0] * n  # observed access level the age is measured against
        self.age = [0.0] * n
        self.obs = [0.0] * n
        self.pre: dict[int, float] = {}  # accesses already credited to earlier nodes in the current interval
        self.copying: dict[int, _Copy] = {}
        self.waiting: list[int] = []  # born but no room yet
        self.live = False


class SimulatedMemory:
    """A simulated memory system: implements both Tracker (sample) and Migrator (configure, apply)."""

    name = "simulated"

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
        self._rng = random.Random(self.seed)
        self._rank = {n: t.rank for t in self.topology.tiers for n in t.nodes}
        self.fast_nodes = frozenset(self.topology.tiers[0].nodes) if self.topology.tiers else frozenset()
        self._capacity = {n.node: n.capacity for n in scenario.nodes}
        self._unmanaged = {n.node: n.used for n in scenario.nodes}
        self._used = dict.fromkeys(self._capacity, 0)  # managed bytes held, including reserved copy targets
        self._live_nodes = set(self._capacity)
        size = max(self._capacity) + 1
        self._iv = [0.0] * size  # accesses served per node in the current interval
        self._node_total = [0.0] * size
        self._procs = [_Proc(ProcessWorkload(p, self.region_size, self.seed)) for p in scenario.processes]
        self._by_pid = {p.pid: p for p in self._procs}
        self._heap: list[tuple[float, int, int, str, Any]] = []
        self._seq = 0
        for p in self._procs:
            self._push(p.spec.start_at, _START, "start", p)
            if p.spec.exit_at is not None:
                self._push(p.spec.exit_at, _EXIT, "exit", p)
        for e in scenario.events:
            self._push(e.at, _HOTPLUG, e.action, e.node)
        self._now = 0.0  # scenario time
        self._t_sample = 0.0  # start of the current observation interval
        self._busy_until = 0.0  # the copy engine is busy until then
        self._births_after: float | None = None
        self._total = 0.0
        self._fast = 0.0
        self._migrated: Counter[tuple[int, int]] = Counter()
        self._failed: Counter[str] = Counter()
        self._evacuated: Counter[tuple[int, int]] = Counter()
        self._waits = 0
        self._late_failures: Counter[str] = Counter()  # copies cancelled in flight, reported by the next apply
        self._late_errors: list[str] = []
        self._last_share: float | None = None
        self._resolution = 0.0
        self.hotplug_log: list[HotplugRecord] = []
        self._advance(0.0)

    # -------------------------------------------------------------------------------------------------------
    # Tracker and Migrator.

    def sample(self, now: float) -> Sample:
        """Advance to `now` and report every live region's observed heat since the previous sample."""
        t = self._scenario_time(now)
        self._advance(t)
        dt = t - self._t_sample
        if dt < 1e-9:  # a repeated sample: report the last observation again
            dt, t = 0.0, self._t_sample
        regions: list[RegionHeat] = []
        iv = self._iv
        f = self.scenario.sample_fraction
        scale = 1.0 / (f * dt) if f > 0 and dt > 0 else (1.0 / dt if dt > 0 else 0.0)
        floor = 3.0 * scale if f > 0 else 0.0  # a change of fewer than 3 sampled accesses is noise
        if dt > 0:
            self._resolution = scale if f > 0 else 0.0  # accesses/s one sampled access stands for
        for p in self._procs:
            if p.live:
                if dt > 0:
                    self._observe_process(p, t, dt, scale, floor, regions)
                else:
                    rs, node, sizes, obs, age = self.region_size, p.node, p.work.sizes, p.obs, p.age
                    regions += [
                        RegionHeat(p.pid, VBASE + i * rs, sizes[i], node[i], obs[i], age[i])
                        for i in range(p.high)
                        if node[i] >= 0
                    ]
        if dt > 0:
            total = sum(iv)
            fast = sum(iv[n] for n in self.fast_nodes)
            self._total += total
            self._fast += fast
            for n, a in enumerate(iv):
                self._node_total[n] += a
            self._last_share = fast / total if total > 0 else None
            self._iv = [0.0] * len(iv)
        self._t_sample = t
        live = sorted(self._live_nodes)
        return Sample(
            regions=tuple(regions),
            free_bytes={n: self._free(n) for n in live},
            total_bytes={n: self._capacity[n] for n in live},
            processes={
                p.pid: Process(p.pid, p.spec.name, p.spec.cmdline, p.spec.cgroup) for p in self._procs if p.live
            },
            fast_share=self._last_share,
            resolution=self._resolution,
        )

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
        t = begin = max(t0, self._busy_until)
        after = self._used_after_copies()
        failures: Counter[str] = Counter()
        why: Counter[tuple[str, str]] = Counter()
        transfers: Counter[tuple[int, int]] = Counter()
        moved: list[tuple[int, int]] = []
        for move in plan.moves:
            reason, detail, proc, i = self._check(move, after)
            if reason:
                pages = (proc.work.sizes[i] if proc is not None and i >= 0 else move.size) // PAGE_SIZE
                failures[reason] += pages
                why[(reason, detail)] += 1
                continue
            assert proc is not None
            size = proc.work.sizes[i]
            copy = _Copy(t, t + size / self.bandwidth, move.src, move.dst, size)
            proc.copying[i] = copy
            if copy.start <= self._now:
                self._begin(proc, i, copy)
            else:
                self._push(copy.start, _BEGIN, "begin", (proc, i, copy))
            t = copy.done
            self._push(t, _DONE, "done", (proc, i, copy))
            after[move.src] -= size
            after[move.dst] += size
            transfers[(move.src, move.dst)] += size
            moved.append(move.key)
        self._busy_until = t
        self._failed.update(failures)
        failures.update(self._late_failures)
        errors = [f"{count} move(s) failed ({reason}): {detail}" for (reason, detail), count in sorted(why.items())]
        errors += self._late_errors
        self._late_failures, self._late_errors = Counter(), []
        return Outcome(
            transfers=tuple(Transfer(s, d, b, b // PAGE_SIZE) for (s, d), b in sorted(transfers.items())),
            failures=dict(failures),
            seconds=t - begin,
            moved=tuple(moved),
            errors=tuple(errors),
        )

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
        return self.start + self._busy_until

    def stats(self) -> SimStats:
        return SimStats(
            time=self.now,
            total_accesses=self._total,
            fast_accesses=self._fast,
            node_accesses={n: self._node_total[n] for n in sorted(self._capacity)},
            migrated_bytes=dict(self._migrated),
            migrated_pages={k: v // PAGE_SIZE for k, v in self._migrated.items()},
            failed_pages=dict(self._failed),
            evacuated_bytes=dict(self._evacuated),
            allocation_waits=self._waits,
        )

    def live_nodes(self) -> tuple[int, ...]:
        return tuple(sorted(self._live_nodes))

    def live_topology(self) -> Topology:
        """The simulated topology without removed nodes (what re-discovery would find after hotplug)."""
        nodes = tuple(n for n in self.topology.nodes if n.node in self._live_nodes)
        tiers: list[Tier] = []
        for tier in self.topology.tiers:
            members = tuple(n for n in tier.nodes if n in self._live_nodes)
            if members:
                tiers.append(Tier(tier.name, len(tiers), members))
        return Topology(nodes=nodes, tiers=tuple(tiers), warnings=self.topology.warnings)

    def placement(self) -> dict[tuple[int, int], int]:
        """Node of every allocated region of every live process, by key (pid, start)."""
        rs = self.region_size
        return {
            (p.pid, VBASE + i * rs): p.node[i] for p in self._procs if p.live for i in range(p.high) if p.node[i] >= 0
        }

    def region_sizes(self) -> dict[tuple[int, int], int]:
        rs = self.region_size
        return {
            (p.pid, VBASE + i * rs): p.work.sizes[i]
            for p in self._procs
            if p.live
            for i in range(p.high)
            if p.node[i] >= 0
        }

    def in_flight(self) -> dict[tuple[int, int], tuple[int, int, float, float]]:
        """Copies queued or running: key -> (src, dst, start, completion) with times on the caller's clock.
        A copy holds room on dst from its start."""
        rs = self.region_size
        return {
            (p.pid, VBASE + i * rs): (c.src, c.dst, self.start + c.start, self.start + c.done)
            for p in self._procs
            for i, c in p.copying.items()
        }

    def used_bytes(self) -> dict[int, int]:
        """Managed bytes held per node (regions there plus room reserved for copies in flight) + unmanaged use."""
        return {n: self._used[n] + self._unmanaged[n] for n in sorted(self._capacity)}

    def capacity(self) -> dict[int, int]:
        return dict(self._capacity)

    def rates_at(self, when: float) -> dict[tuple[int, int], float]:
        """True accesses/s at caller time `when` of every region that exists then. Pure: state is not touched."""
        t = when - self.start
        rs = self.region_size
        out: dict[tuple[int, int], float] = {}
        for p in self._procs:
            k = p.work.allocated_at(t)
            if k:
                rates = p.work.rates_at(t)
                for i in range(k):
                    out[(p.pid, VBASE + i * rs)] = rates[i]
        return out

    def mean_rates(self, t0: float, t1: float) -> dict[tuple[int, int], float]:
        """True mean accesses/s over [t0, t1] (caller's clock) of the regions that exist at t0 or appear before t1.
        Pure: an oracle can ask about the future."""
        a, b = t0 - self.start, t1 - self.start
        if b <= a:
            return self.rates_at(t0)
        rs = self.region_size
        out: dict[tuple[int, int], float] = {}
        for p in self._procs:
            k = max(p.work.allocated_at(a), p.work.allocated_at(min(b, p.work.end) - 1e-9))
            if k:
                acc = p.work.integrate(a, b)
                for i in range(k):
                    out[(p.pid, VBASE + i * rs)] = acc[i] / (b - a)
        return out

    def true_rates(self) -> dict[tuple[int, int], float]:
        """True accesses/s of every region now."""
        return self.rates_at(self.now)

    # -------------------------------------------------------------------------------------------------------
    # Time.

    def _scenario_time(self, now: float) -> float:
        t = now - self.start
        if t < self._now - 1e-9:
            raise ValueError(f"time went backwards: {now} is before {self.now}")
        return max(t, self._now)

    def _push(self, t: float, prio: int, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, prio, self._seq, kind, payload))

    def _advance(self, t: float) -> None:
        """Process everything that happens up to and including t, in time order."""
        events = []
        while self._heap and self._heap[0][0] <= t:
            events.append(heapq.heappop(self._heap))
        for p in self._procs:
            if p.work.growth is not None:
                for when, i in p.work.births(self._births_after, t):
                    self._seq += 1
                    events.append((when, _BIRTH, self._seq, "birth", (p, i)))
        self._births_after = t
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        for when, _, _, kind, payload in events:
            if kind == "done":
                proc, i, copy = payload
                self._complete(proc, i, copy, when)
            elif kind == "begin":
                proc, i, copy = payload
                self._begin(proc, i, copy)
            elif kind == "birth":
                proc, i = payload
                if proc.live:
                    self._allocate(proc, i)
            elif kind == "start":
                self._start(payload)
            elif kind == "exit":
                self._exit(payload, when)
            elif kind == "remove":
                self._remove_node(payload, when)
            elif kind == "add":
                self._add_node(payload, when)
        self._now = t
        for p in self._procs:
            if p.waiting and p.live:
                waiting, p.waiting = p.waiting, []
                for i in waiting:
                    self._allocate(p, i, retry=True)

    # -------------------------------------------------------------------------------------------------------
    # Events.

    def _start(self, p: _Proc) -> None:
        p.live = True
        if p.work.growth is None:
            for i in range(p.work.n):
                self._allocate(p, i)

    def _exit(self, p: _Proc, t: float) -> None:
        if not p.live:
            return
        bulk = p.work.integrate(self._t_sample, t)
        for i in range(p.high):
            nd = p.node[i]
            if nd >= 0:
                self._iv[nd] += bulk[i] - p.pre.get(i, 0.0)
                self._used[nd] -= p.work.sizes[i]
                p.node[i] = -1
        for c in p.copying.values():
            self._cancel(c, "process_gone", f"pid {p.pid} ({p.spec.name}) exited during migration")
        p.copying.clear()
        p.pre, p.waiting, p.live = {}, [], False

    def _begin(self, p: _Proc, i: int, c: _Copy) -> None:
        """A queued copy starts: reserve its room on the target (taken meanwhile by a new region: it fails)."""
        if c.cancelled:
            return
        if self._free(c.dst) < c.size:
            c.cancelled = True
            del p.copying[i]
            self._failed["target_full"] += c.size // PAGE_SIZE
            self._late_failures["target_full"] += c.size // PAGE_SIZE
            error = f"node {c.dst} filled up before a queued copy of pid {p.pid} started"
            if error not in self._late_errors:
                self._late_errors.append(error)
            return
        self._used[c.dst] += c.size
        c.begun = True

    def _complete(self, p: _Proc, i: int, c: _Copy, t: float) -> None:
        if c.cancelled:
            return
        self._settle(p, i, t)
        self._used[c.src] -= c.size
        p.node[i] = c.dst
        del p.copying[i]
        self._migrated[(c.src, c.dst)] += c.size

    def _cancel(self, c: _Copy, reason: str, error: str) -> None:
        c.cancelled = True
        if c.begun:
            self._used[c.dst] -= c.size
        self._failed[reason] += c.size // PAGE_SIZE
        self._late_failures[reason] += c.size // PAGE_SIZE
        if error not in self._late_errors:
            self._late_errors.append(error)

    def _settle(self, p: _Proc, i: int, t: float) -> None:
        """Credit region i's accesses since the interval start up to t to its current node."""
        acc = p.work.integrate_one(i, self._t_sample, t)
        self._iv[p.node[i]] += acc - p.pre.get(i, 0.0)
        p.pre[i] = acc

    def _remove_node(self, node: int, t: float) -> None:
        """Offline a node the way the kernel does: evacuate its regions (nearest tier with room), then drop it."""
        if node not in self._live_nodes:
            return
        order = self._evacuation_order(node)
        victims = [(p, i) for p in self._procs if p.live for i in range(p.high) if p.node[i] == node]
        free = {n: self._free(n) for n in order}
        for c in (c for q in self._procs for c in q.copying.values()):
            if c.src == node and c.begun:
                free[c.dst] = free.get(c.dst, 0) + c.size  # the reservation will be released
        plan: list[int] = []
        for p, i in victims:
            size = p.work.sizes[i]
            dst = next((n for n in order if free[n] >= size), None)
            if dst is None:
                need = format_size(sum(q.work.sizes[k] for q, k in victims))
                why = f"offline of node {node} failed: no room elsewhere for its {need} of process memory"
                self.hotplug_log.append(HotplugRecord(self.start + t, node, "remove", False, message=why))
                return
            free[dst] -= size
            plan.append(dst)
        for p in self._procs:
            for i, c in list(p.copying.items()):
                if node in (c.src, c.dst):
                    self._cancel(c, "node_gone", f"node {node} went offline during migration")
                    del p.copying[i]
        moved: Counter[int] = Counter()
        for (p, i), dst in zip(victims, plan, strict=True):
            size = p.work.sizes[i]
            self._settle(p, i, t)
            self._used[node] -= size
            self._used[dst] += size
            p.node[i] = dst
            moved[dst] += size
            self._evacuated[(node, dst)] += size
        self._live_nodes.discard(node)
        self.hotplug_log.append(HotplugRecord(self.start + t, node, "remove", True, dict(moved)))

    def _add_node(self, node: int, t: float) -> None:
        if node in self._live_nodes:
            return
        self._live_nodes.add(node)
        self._unmanaged[node] = 0
        self.hotplug_log.append(HotplugRecord(self.start + t, node, "add", True))

    # -------------------------------------------------------------------------------------------------------
    # Placement and checks.

    def _free(self, n: int) -> int:
        return self._capacity[n] - self._unmanaged[n] - self._used[n]

    def _by_speed(self) -> list[int]:
        return sorted(self._live_nodes, key=lambda n: (self._rank[n], n))

    def _candidates(self, placement: Placement, i: int) -> list[int]:
        order = self._by_speed()
        if placement.kind == "slow":
            return sorted(order, key=lambda n: (-self._rank[n], n))
        if placement.kind == "interleave" and order:
            k = i % len(order)
            return order[k:] + order[:k]
        if placement.kind == "node" and placement.node in self._live_nodes:
            return [placement.node] + [n for n in order if n != placement.node]
        return order

    def _allocate(self, p: _Proc, i: int, retry: bool = False) -> None:
        size = p.work.sizes[i]
        dst = next((n for n in self._candidates(p.spec.placement, i) if self._free(n) >= size), None)
        if dst is None:
            if not retry:
                self._waits += 1
            p.waiting.append(i)
            return
        self._used[dst] += size
        p.node[i] = dst
        p.high = max(p.high, i + 1)
        p.level[i] = p.age[i] = p.obs[i] = 0.0

    def _evacuation_order(self, node: int) -> list[int]:
        """Same tier first, then slower tiers (nearest first), then faster tiers (nearest first)."""
        r = self._rank[node]
        others = [n for n in self._live_nodes if n != node]
        return sorted(
            others,
            key=lambda n: (0 if self._rank[n] == r else 1 if self._rank[n] > r else 2, abs(self._rank[n] - r), n),
        )

    def _used_after_copies(self) -> dict[int, int]:
        """Managed bytes on each node once every queued copy is done, i.e. when the next copy would start."""
        after = dict(self._used)
        for p in self._procs:
            for c in p.copying.values():
                after[c.src] -= c.size
                if not c.begun:
                    after[c.dst] += c.size
        return after

    def _check(self, move: Move, after: Mapping[int, int]) -> tuple[str, str, _Proc | None, int]:
        """(reason, detail, process, region index) for a move that cannot be queued; reason "" when it can.

        Copies run one after another, so every copy queued before this one has finished (and freed its source) by
        the time this one starts: the target's room is judged on `after`, the managed bytes per node by then."""
        p = self._by_pid.get(move.pid)
        if p is None or not p.live:
            return "process_gone", f"pid {move.pid} is not running", None, -1
        i, rest = divmod(move.start - VBASE, self.region_size)
        if rest or not 0 <= i < p.work.n or p.node[i] < 0:
            return "not_present", f"pid {move.pid} has no region at {move.start:#x}", None, -1
        if move.dst not in self._live_nodes:
            return "node_gone", f"target node {move.dst} is not online", p, i
        if i in p.copying:
            return "busy", "region already being copied", p, i
        if p.node[i] != move.src:
            return "not_present", f"region not on its src node any more (on node {p.node[i]})", p, i
        if move.dst == move.src:
            return "other", "src and dst are the same node", p, i
        if self._capacity[move.dst] - self._unmanaged[move.dst] - after[move.dst] < p.work.sizes[i]:
            return "target_full", f"no room on node {move.dst}", p, i
        return "", "", p, i

    def _observe_process(
        self, p: _Proc, t: float, dt: float, scale: float, floor: float, out: list[RegionHeat]
    ) -> None:
        """Credit p's accesses over [interval start, t] to nodes, observe them (noise, age), append RegionHeats."""
        iv, node, level, age, sizes = self._iv, p.node, p.level, p.age, p.work.sizes
        pid, rs, f = p.pid, self.region_size, self.scenario.sample_fraction
        bulk = p.work.integrate(self._t_sample, t)
        for i, prev in p.pre.items():  # already credited to the nodes the region was on before
            iv[node[i]] -= prev
        p.pre = {}
        observed = p.obs = self._observe(bulk, f, scale) if f > 0 else [a * scale for a in bulk]
        append = out.append
        for i in range(p.high):
            nd = node[i]
            if nd < 0:
                continue
            iv[nd] += bulk[i]
            o, lv = observed[i], level[i]
            d = o - lv if o > lv else lv - o
            if d > floor and d + d > (o if o > lv else lv):  # changed by more than half: a new level
                level[i] = o
                a = 0.0
            else:
                a = age[i] + dt
            age[i] = a
            append(RegionHeat(pid, VBASE + i * rs, sizes[i], nd, o, a))

    def _observe(self, bulk: list[float], f: float, scale: float) -> list[float]:
        """What the tracker sees of accesses `bulk`: a Poisson count of f x bulk (Gaussian approximation above 10),
        times `scale` (1 / (f x seconds)): a noisy per-second estimate, never negative, 0 for untouched regions."""
        rand, gauss, exp, sqrt = self._rng.random, self._rng.gauss, math.exp, math.sqrt
        out = []
        for a in bulk:
            m = a * f
            if m <= 0.0:
                out.append(0.0)
            elif m < 10.0:  # inversion: one uniform draw
                k, term, u = 0, exp(-m), rand()
                cum = term
                while u > cum and k < 100:
                    k += 1
                    term *= m / k
                    cum += term
                out.append(k * scale)
            else:
                x = m + sqrt(m) * gauss()
                out.append(x * scale if x > 0.0 else 0.0)
        return out
