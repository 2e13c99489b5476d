"""The contract between the placement loop and whatever samples heat and moves memory.

The loop calls `tracker.sample(now)` for the heat of memory regions, builds a Plan with the pure decision
function, and hands it to `migrator.apply(plan, now)`, which returns an Outcome. Kernel-executed engines
(DAMOS, NUMA-balancing tiering) implement the same calls: `configure()` turns the policy into kernel settings and
`apply()` reports what the kernel did since the last call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cxltierd.topology import Topology


@dataclass(frozen=True)
class RegionHeat:
    """Access heat of one memory region, as DAMON reports it (nr_accesses, age), normalised to seconds."""

    pid: int  # owning process; 0 for a physical-address (paddr) region
    start: int  # first byte: a virtual address for pid > 0, a physical address for pid 0
    size: int  # bytes
    node: int  # NUMA node holding (most of) the region
    accesses: float  # accesses per second seen in the last aggregation interval
    age: float  # seconds the region has kept about this access level


@dataclass(frozen=True)
class Move:
    """One planned migration of a region, with the short reason the policy chose it."""

    pid: int
    start: int
    size: int
    src: int
    dst: int
    reason: str  # "promote: 180 acc/s on cxl node 2 > coldest fast region 3 acc/s"


@dataclass(frozen=True)
class Plan:
    moves: tuple[Move, ...] = ()
    notes: tuple[str, ...] = ()  # why nothing (more) was planned: "rate limit reached", "fast tier full"


@dataclass(frozen=True)
class Transfer:
    """Memory that actually moved between two nodes."""

    src: int
    dst: int
    bytes: int
    pages: int


@dataclass(frozen=True)
class Outcome:
    transfers: tuple[Transfer, ...] = ()
    failures: dict[str, int] = field(default_factory=dict)  # reason ("target_full", "process_gone", ...) -> pages
    seconds: float = 0.0  # time the moves took (real or simulated)


class Tracker(Protocol):
    """Samples the heat of managed memory."""

    name: str

    def sample(self, now: float) -> Sequence[RegionHeat]: ...

    def stop(self) -> None: ...


class Migrator(Protocol):
    """Moves memory between nodes (or reports what the kernel moved)."""

    name: str

    def configure(self, topology: Topology, policy: Any) -> None: ...

    def apply(self, plan: Plan, now: float) -> Outcome: ...

    def stop(self) -> None: ...
