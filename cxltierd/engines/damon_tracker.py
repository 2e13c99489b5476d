"""DAMON tracker: heat of the managed processes' memory from DAMON vaddr monitoring, in fixed-size chunks.

One vaddr kdamond per managed process (a kdamond has one context, and tried regions do not say which target
they belong to), from a fixed pool of `max_processes` kdamonds created once: the largest managed processes get a
slot each; a slot whose process exits or stops being managed is given to the next one by restarting only that
kdamond, so the others keep the regions they have learned. Each sample reads the regions back,
cuts them into chunks aligned to their size (stable keys from tick to tick, the unit the move_pages engine
moves), and finds each chunk's node by querying a few of its pages with move_pages(2). Chunks are
`damon.region_size` until the tracked processes' memory would make more than `damon.max_chunks` of them; then
they double as often as needed (`chunk_size`), since the daemon's work per tick is linear in chunks, and chunks
much finer than DAMON's own regions (at most max_regions per kdamond) carry no more information.
Chunks with no page present are left out. DAMON's nr_accesses (samples per aggregation interval that saw an
access) becomes accesses per second; age becomes seconds. One sampled access stands for 1 / aggregation interval
accesses per second (the Sample's resolution), so the policy's min_samples floor keeps a region that DAMON saw
accessed once or twice from being promoted. DAMON starts a vaddr target with min_regions regions over the whole
address space and needs many aggregation intervals to split them; each kdamond gets at least MIN_REGIONS, so that
the initial regions are already close to the chunk size and a hot set is not averaged with its cold neighbours.
Even so, the first aggregation intervals of a new kdamond see regions that straddle a hot set's edges, and every
chunk of such a region reads as warm: the tracker reports a kdamond's regions only once it has run WARMUP
aggregation intervals.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from typing import Any

from cxltierd.discovery.live import ProcInfo, list_processes, node_memory
from cxltierd.engines import syscalls
from cxltierd.engines.damon import MIN_REGIONS, Context, DamonRegion, Kdamonds, Target, parse_regions
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.model import Process, RegionHeat, Sample
from cxltierd.policy.roles import is_managed, pinned_tier
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

PROBES = 8  # pages queried per chunk to find its node
WARMUP = 20  # aggregation intervals a new kdamond runs before its regions are read (they split meanwhile)


def chunks(regions: list[DamonRegion], size: int, aggr_s: float) -> dict[int, tuple[float, float]]:
    """Chunk start -> (accesses/s, age s): regions cut at `size` boundaries, overlap-weighted per chunk."""
    acc: dict[int, list[float]] = {}
    for r in regions:
        rate = r.nr_accesses / aggr_s
        age = r.age * aggr_s
        first = r.start - r.start % size
        for c in range(first, r.end, size):
            overlap = min(r.end, c + size) - max(r.start, c)
            if overlap <= 0:
                continue
            a = acc.setdefault(c, [0.0, 0.0, 0.0])
            a[0] += rate * overlap
            a[1] += age * overlap
            a[2] += overlap
    return {c: (a[0] / a[2], a[1] / a[2]) for c, a in acc.items() if a[2] > 0}


def chunk_size(managed: int, base: int, limit: int, current: int) -> int:
    """The chunk size for `managed` bytes: `base` times the smallest power of two that makes at most `limit` chunks
    (`limit` 0: always `base`). The `current` size is kept unless it makes too many chunks or is at least four times
    the size wanted, so the size does not flip back and forth (and heat is not relearned) as processes grow and
    shrink a little."""
    want = base
    while limit and managed > want * limit:
        want *= 2
    return want if current < want or current >= 4 * want else current


def chunk_nodes(pid: int, starts: list[int], size: int, pages: Any, page_size: int) -> dict[int, int]:
    """Chunk start -> majority node of PROBES pages spread over it; chunks with no page present are left out."""
    step = max(page_size, (size // PROBES) - (size // PROBES) % page_size)
    addrs = array("Q")
    for c in starts:
        addrs.extend(range(c, c + size, step))
    if not addrs:
        return {}
    status = pages.query(pid, addrs)
    out = {}
    per = len(range(0, size, step))
    for i, c in enumerate(starts):
        nodes = Counter(n for n in status[i * per : (i + 1) * per] if n >= 0)
        if nodes:
            out[c] = nodes.most_common(1)[0][0]
    return out


class DamonTracker:
    """Tracker: heat of the managed processes' memory per region_size chunk, from a pool of vaddr kdamonds."""

    name = "damon"

    def __init__(
        self,
        fs: HostFS,
        policy: Policy,
        kdamonds: Kdamonds,
        nodes: list[int],
        pages: Any = syscalls,
        max_processes: int = 8,
    ) -> None:
        self.fs = fs
        self.policy = policy
        self.kdamonds = kdamonds
        self.nodes = nodes
        self.pages = pages
        self.max_processes = max_processes
        self.slots: list[int | None] = []  # kdamond i of the pool monitors pid slots[i] (None: free, off)
        self.since: list[float] = []  # when each slot's kdamond last (re)started (the loop's clock)
        self.self_pid = os.getpid()
        self.errors: list[str] = []
        self.chunk = policy.damon.region_size  # the chunk size in use (chunk_size)

    @property
    def targets(self) -> list[int]:
        """The monitored pids, in slot order."""
        return [pid for pid in self.slots if pid is not None]

    def configure(self, topology: Topology, policy: Policy) -> None:
        """New policy: running kdamonds take the new intervals and region limits through a commit."""
        changed = policy.damon != self.policy.damon
        if policy.damon.region_size != self.policy.damon.region_size:
            self.chunk = policy.damon.region_size
        self.policy = policy
        self.nodes = list(topology.node_ids)
        if policy.damon.max_processes != self.max_processes:  # a new pool size: the pool is made again
            self.max_processes = policy.damon.max_processes
            if self.slots:
                self.kdamonds.cleanup()
                self.slots, self.since = [], []
            return
        if changed:
            for i, pid in enumerate(self.slots):
                if pid is not None:
                    self.kdamonds.commit(i, self.context(pid))

    def context(self, pid: int) -> Context:
        """The vaddr context that monitors one process."""
        d = self.policy.damon
        return Context(
            operations="vaddr",
            targets=(Target(pid=pid),),
            sample_us=int(d.sample_interval * 1e6),
            aggr_us=int(d.aggregation_interval * 1e6),
            update_us=int(d.update_interval * 1e6),
            min_regions=max(d.min_regions, MIN_REGIONS),
            max_regions=max(d.max_regions, 2 * MIN_REGIONS),
        )

    def select(self, procs: list[ProcInfo]) -> list[ProcInfo]:
        """Managed processes (pinned ones included), largest first, at most max_processes."""
        out = []
        for p in procs:
            proc = Process(p.pid, p.name, p.cmdline, p.cgroup)
            if p.pid == self.self_pid or not is_managed(self.policy, proc):
                continue
            if p.rss >= self.policy.processes.min_rss or pinned_tier(self.policy, proc):
                out.append(p)
        return out[: self.max_processes]

    def _retarget(self, want: list[int], now: float) -> None:
        """Give each wanted pid a slot, restarting only the kdamonds whose process changed or exited."""
        if not self.slots:
            if not want:
                return
            self.kdamonds.reserve(self.max_processes)
            self.slots, self.since = [None] * self.max_processes, [now] * self.max_processes
        wanted = set(want)
        for i, pid in enumerate(self.slots):
            if pid is None:
                continue
            if pid not in wanted:
                self.kdamonds.stop_one(i)
                self.slots[i] = None
            elif self.kdamonds.state(i) != "on":  # its kdamond stopped: the process exited (or was replaced)
                self.slots[i] = None
        held = set(self.targets)
        free = [i for i, pid in enumerate(self.slots) if pid is None]
        for pid in (p for p in want if p not in held):
            if not free:
                break
            i = free.pop(0)
            try:
                self.kdamonds.restart(i, self.context(pid))
            except HostFSError as e:  # it exited meanwhile: the kernel refuses a dead pid
                self.errors.append(f"pid {pid}: {e}")
                continue
            self.slots[i], self.since[i] = pid, now

    def sample(self, now: float) -> Sample:
        """Retarget the pool to the managed processes, then read the warm kdamonds' regions as chunk heat."""
        procs = self.select(list_processes(self.fs))
        self._retarget([p.pid for p in procs], now)
        d = self.policy.damon
        tracked = set(self.targets)
        managed = sum(p.rss for p in procs if p.pid in tracked)
        size = self.chunk = chunk_size(managed, d.region_size, d.max_chunks, self.chunk)
        aggr_s = self.policy.damon.aggregation_interval
        regions: list[RegionHeat] = []
        for i, pid in enumerate(self.slots):
            if pid is None or now - self.since[i] < WARMUP * aggr_s:
                continue
            try:
                self.kdamonds.update(i, "update_schemes_tried_regions")
                heat = chunks(parse_regions(self.fs, i), size, aggr_s)
                where = chunk_nodes(pid, sorted(heat), size, self.pages, syscalls.PAGE_SIZE)
            except (HostFSError, syscalls.PagesError) as e:
                self.errors.append(f"pid {pid}: {e}")  # exited between listing and reading: next tick drops it
                continue
            for c, node in where.items():
                rate, age = heat[c]
                regions.append(RegionHeat(pid=pid, start=c, size=size, node=node, accesses=rate, age=age))
        mem = node_memory(self.fs, self.nodes)
        return Sample(
            regions=tuple(regions),
            free_bytes=mem.free,
            available_bytes=mem.available,
            total_bytes=mem.total,
            processes={p.pid: Process(p.pid, p.name, p.cmdline, p.cgroup) for p in procs},
            resolution=1.0 / aggr_s,
        )

    def stop(self) -> None:
        """Turn off and remove the pool's kdamonds."""
        try:
            self.kdamonds.cleanup()
        except (HostFSError, CxltierdError, OSError) as e:
            raise CxltierdError(f"DAMON cleanup: {e}") from None
        self.slots, self.since = [], []
