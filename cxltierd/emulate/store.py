"""The region store of the simulated memory system: which node holds each process region, and how full each node is.

Every process's regions lie back to back from VBASE, `region_size` apart; region i of process p is known by the key
(p.pid, VBASE + i * region_size). A region's node is -1 until it is allocated and again after its process exits.

Invariants: for every live node, `used` counts the managed bytes it holds (its regions plus the room reserved for
copies into it) and `free(n)` = capacity - unmanaged - used is never negative; `live` holds the nodes online now.
Nodes are tried fastest tier first (`rank` 0), by node id within a tier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cxltierd.emulate.spec import Placement, Scenario
from cxltierd.emulate.workload import ProcessWorkload
from cxltierd.topology import Tier, Topology

if TYPE_CHECKING:
    from cxltierd.emulate.copies import Copy

VBASE = 0x7F0000000000  # virtual address of every process's first region


class Proc:
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
        self.copying: dict[int, Copy] = {}
        self.waiting: list[int] = []  # born but no room yet
        self.live = False


class Store:
    """The scenario's processes and nodes: allocation, placement order and the per-node byte accounting."""

    def __init__(self, scenario: Scenario, topology: Topology, seed: int) -> None:
        """`topology`: the simulated topology (the scenario's nodes only); `seed`: the workloads' seed."""
        self.region_size = scenario.region_size
        self.rank = {n: t.rank for t in topology.tiers for n in t.nodes}
        self.capacity = {n.node: n.capacity for n in scenario.nodes}
        self.unmanaged = {n.node: n.used for n in scenario.nodes}
        self.used = dict.fromkeys(self.capacity, 0)  # managed bytes held, including reserved copy targets
        self.live = set(self.capacity)
        self.procs = [Proc(ProcessWorkload(p, self.region_size, seed)) for p in scenario.processes]
        self.by_pid = {p.pid: p for p in self.procs}
        self.waits = 0  # regions that found no room when allocated and had to wait

    def free(self, n: int) -> int:
        """Bytes node n can still take."""
        return self.capacity[n] - self.unmanaged[n] - self.used[n]

    def _by_speed(self) -> list[int]:
        return sorted(self.live, key=lambda n: (self.rank[n], n))

    def _candidates(self, placement: Placement, i: int) -> list[int]:
        order = self._by_speed()
        if placement.kind == "slow":
            return sorted(order, key=lambda n: (-self.rank[n], n))
        if placement.kind == "interleave" and order:
            k = i % len(order)
            return order[k:] + order[:k]
        if placement.kind == "node" and placement.node in self.live:
            return [placement.node] + [n for n in order if n != placement.node]
        return order

    def start(self, p: Proc) -> None:
        """The process starts: without growth, all its regions are allocated at once."""
        p.live = True
        if p.work.growth is None:
            for i in range(p.work.n):
                self.allocate(p, i)

    def allocate(self, p: Proc, i: int, retry: bool = False) -> None:
        """Put region i on the first node of its placement order with room; without room it waits."""
        size = p.work.sizes[i]
        dst = next((n for n in self._candidates(p.spec.placement, i) if self.free(n) >= size), None)
        if dst is None:
            if not retry:
                self.waits += 1
            p.waiting.append(i)
            return
        self.used[dst] += size
        p.node[i] = dst
        p.high = max(p.high, i + 1)
        p.level[i] = p.age[i] = p.obs[i] = 0.0

    def retry_waiting(self) -> None:
        """Allocate the regions still waiting for room, in order."""
        for p in self.procs:
            if p.waiting and p.live:
                waiting, p.waiting = p.waiting, []
                for i in waiting:
                    self.allocate(p, i, retry=True)

    def release(self, p: Proc) -> None:
        """The process exits: its regions leave their nodes."""
        for i in range(p.high):
            nd = p.node[i]
            if nd >= 0:
                self.used[nd] -= p.work.sizes[i]
                p.node[i] = -1

    def evacuation_order(self, node: int) -> list[int]:
        """Same tier first, then slower tiers (nearest first), then faster tiers (nearest first)."""
        r = self.rank[node]
        others = [n for n in self.live if n != node]
        return sorted(
            others,
            key=lambda n: (0 if self.rank[n] == r else 1 if self.rank[n] > r else 2, abs(self.rank[n] - r), n),
        )

    def live_topology(self, topology: Topology) -> Topology:
        """`topology` without removed nodes (what re-discovery would find after hotplug)."""
        nodes = tuple(n for n in topology.nodes if n.node in self.live)
        tiers: list[Tier] = []
        for tier in topology.tiers:
            members = tuple(n for n in tier.nodes if n in self.live)
            if members:
                tiers.append(Tier(tier.name, len(tiers), members))
        return Topology(nodes=nodes, tiers=tuple(tiers), warnings=topology.warnings)

    def placement(self) -> dict[tuple[int, int], int]:
        """Node of every allocated region of every live process, by key (pid, start)."""
        rs = self.region_size
        return {
            (p.pid, VBASE + i * rs): p.node[i] for p in self.procs if p.live for i in range(p.high) if p.node[i] >= 0
        }

    def region_sizes(self) -> dict[tuple[int, int], int]:
        """Size of every allocated region of every live process, by key (pid, start)."""
        rs = self.region_size
        return {
            (p.pid, VBASE + i * rs): p.work.sizes[i]
            for p in self.procs
            if p.live
            for i in range(p.high)
            if p.node[i] >= 0
        }

    def used_bytes(self) -> dict[int, int]:
        """Managed bytes held per node (regions there plus room reserved for copies in flight) + unmanaged use."""
        return {n: self.used[n] + self.unmanaged[n] for n in sorted(self.capacity)}
