"""The contract between the placement loop and whatever samples heat and moves memory.

The loop calls `tracker.sample(now)` for the heat of memory regions and the free memory of each node, builds a
Plan with the pure decision function (cxltierd.policy.decide), and hands it to `migrator.apply(plan, now)`, which
returns an Outcome. Kernel-executed engines (DAMOS, NUMA-balancing tiering) implement the same calls:
`configure()` turns the policy into kernel settings and `apply()` reports what the kernel did since the last call.

Failure reasons (Outcome.failures keys, and the `reason` label of cxltierd_migration_failures_total) are the
words in FAILURE_REASONS; engines map errno values and simulated failures onto them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cxltierd.topology import Topology

# Why a page or region did not move. move_pages(2) per-page status and call errors map onto these.
FAILURE_REASONS: tuple[str, ...] = (
    "target_full",  # -ENOMEM: no room on the target node
    "process_gone",  # ESRCH: the process exited
    "permission",  # EPERM / EACCES: not allowed (or a shared page without MPOL_MF_MOVE_ALL)
    "busy",  # -EBUSY: page pinned or under I/O
    "not_present",  # -ENOENT / -EFAULT: page not mapped or not present
    "node_gone",  # ENODEV / -EINVAL for the node: the target node went away
    "io_error",  # -EIO
    "other",
)


@dataclass(frozen=True, slots=True)
class RegionHeat:
    """Access heat of one memory region, as DAMON reports it (nr_accesses, age), normalised to seconds.

    Regions are keyed by (pid, start); a tracker keeps the same keys from one sample to the next (fixed-size
    chunks) so the loop can smooth heat and enforce cooldowns per region.
    """

    pid: int  # owning process; 0 for a physical-address (paddr) region
    start: int  # first byte: a virtual address for pid > 0, a physical address for pid 0
    size: int  # bytes
    node: int  # NUMA node holding (most of) the region
    accesses: float  # accesses per second seen in the last sampling interval
    age: float = 0.0  # seconds the region has kept about this access level

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)


@dataclass(frozen=True)
class Process:
    """What the policy's process selectors match on."""

    pid: int
    name: str  # comm / executable base name
    cmdline: str = ""
    cgroup: str = ""  # cgroup v2 path, "/system.slice/foo.service"


@dataclass(frozen=True)
class Sample:
    """One observation of the managed memory."""

    regions: tuple[RegionHeat, ...]
    free_bytes: Mapping[int, int]  # node -> free bytes now
    total_bytes: Mapping[int, int] = field(default_factory=dict)  # node -> capacity (empty: from topology)
    processes: Mapping[int, Process] = field(default_factory=dict)  # pid -> process, for the policy's selectors
    fast_share: float | None = None  # true share of accesses served by the fastest tier, when the tracker knows it
    resolution: float = 0.0  # accesses/s that one sampled access stands for (DAMON: 1 / aggregation interval)


@dataclass(frozen=True, slots=True)
class Move:
    """One planned migration of a region, with the short reason the policy chose it."""

    pid: int
    start: int
    size: int
    src: int
    dst: int
    reason: str  # "promote: 180 acc/s on cxl node 2 > coldest fast region 3 acc/s"

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)


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
    failures: Mapping[str, int] = field(default_factory=dict)  # reason (FAILURE_REASONS) -> pages
    seconds: float = 0.0  # time the moves took (real or simulated)
    moved: tuple[tuple[int, int], ...] = ()  # keys (pid, start) of the regions that did move (all or most pages)
    errors: tuple[str, ...] = ()  # one line each: "pid 4242 exited during migration", never fatal


class Tracker(Protocol):
    """Samples the heat of managed memory."""

    name: str

    def configure(self, topology: Topology, policy: Any) -> None: ...

    def sample(self, now: float) -> Sample: ...

    def stop(self) -> None: ...


class Migrator(Protocol):
    """Moves memory between nodes (or reports what the kernel moved).

    An engine whose `kernel_executed` attribute is true (DAMOS, NUMA-balancing tiering) gets an empty plan every
    tick and reports in apply() what the kernel moved since the last call; configure() must write nothing when
    policy.dry_run is set.
    """

    name: str

    def configure(self, topology: Topology, policy: Any) -> None: ...

    def apply(self, plan: Plan, now: float) -> Outcome: ...

    def stop(self) -> None: ...
