"""Topology: every memory node classified into a tier, tiers ordered fast to slow. Pure data, no I/O.

`classify(facts, overrides)` (the pure classification function) lives here too; the dataclasses below are the
contract every later stage (policy, engines, metrics, status) reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Tier kinds from fastest to slowest when nothing else orders them.
TIER_KINDS: tuple[str, ...] = ("hbm", "ddr", "cxl", "pmem", "unknown")


@dataclass(frozen=True)
class Hmat:
    """HMAT figures of a node for its best CPU initiator (access1, else access0). MiB/s and ns."""

    read_latency_ns: int | None = None
    write_latency_ns: int | None = None
    read_bandwidth_mbps: int | None = None
    write_bandwidth_mbps: int | None = None


@dataclass(frozen=True)
class Node:
    """One memory NUMA node and the tier kind it was given."""

    node: int
    kind: str  # one of TIER_KINDS
    reason: str  # why, in a few words: "target of CXL region0 (dax0.0, system-ram)"
    cpus: tuple[int, ...] = ()
    total_bytes: int = 0
    free_bytes: int = 0
    distances: dict[int, int] = field(default_factory=dict, hash=False, compare=True)
    hmat: Hmat | None = None
    kernel_tier: int | None = None  # N of /sys/devices/virtual/memory_tiering/memory_tierN
    region: str | None = None  # CXL region feeding this node, if any


@dataclass(frozen=True)
class Tier:
    """A group of nodes of one kind; rank 0 is the fastest tier."""

    name: str  # equals the kind: "hbm", "ddr", "cxl", "pmem", "unknown"
    rank: int
    nodes: tuple[int, ...]


@dataclass(frozen=True)
class Topology:
    """Memory nodes with their tiers, tiers ordered fast to slow."""

    nodes: tuple[Node, ...]
    tiers: tuple[Tier, ...]
    warnings: tuple[str, ...] = ()  # e.g. disagreement with the kernel's memory tiers

    def node(self, n: int) -> Node:
        for node in self.nodes:
            if node.node == n:
                return node
        raise KeyError(n)

    def tier_of(self, n: int) -> Tier:
        for tier in self.tiers:
            if n in tier.nodes:
                return tier
        raise KeyError(n)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(n.node for n in self.nodes)
