"""The pipeline's value types: what trackers observe (Sample, RegionHeat, Process), what the policy plans (Plan,
Move) and what engines report (Outcome, Transfer, FAILURE_REASONS). Frozen, no I/O, imported by everything and
importing nothing of cxltierd: the bottom of the dependency graph.

Failure reasons (Outcome.failures keys, and the `reason` label of cxltierd_migration_failures_total) are the
words in FAILURE_REASONS; engines map errno values and simulated failures onto them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PAGE_SIZE = 4096  # bytes in a base page (x86_64, arm64 4K): the unit of move_pages(2) and of DAMON sizes

# Why a page or region did not move. move_pages(2) per-page status and call errors map onto these.
FAILURE_REASONS: tuple[str, ...] = (
    "target_full",  # -ENOMEM: no room on the target node
    "process_gone",  # ESRCH: the process exited
    "permission",  # EPERM / EACCES: not allowed (or a shared page without MPOL_MF_MOVE_ALL)
    "busy",  # -EBUSY: page pinned or under I/O, or left behind by a move call that could not migrate it
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
        """The region's identity across samples: (pid, start)."""
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
    free_bytes: Mapping[int, int]  # node -> free bytes now (MemFree)
    total_bytes: Mapping[int, int] = field(default_factory=dict)  # node -> capacity (empty: from topology)
    # node -> bytes the kernel can hand out without costly reclaim: free above the reserve plus most of the page
    # cache and reclaimable slab (MemAvailable per node); empty or a node missing: its free bytes (no page cache)
    available_bytes: Mapping[int, int] = field(default_factory=dict)
    processes: Mapping[int, Process] = field(default_factory=dict)  # pid -> process, for the policy's selectors
    fast_share: float | None = None  # true share of accesses served by the fastest tier, when the tracker knows it
    resolution: float = 0.0  # accesses/s that one sampled access stands for (DAMON: 1 / aggregation interval)

    @property
    def room(self) -> dict[int, int]:
        """Node -> the memory placement counts as room: available bytes where known, else free bytes."""
        return {n: self.available_bytes.get(n, f) for n, f in self.free_bytes.items()}


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
        """The moved region's identity: (pid, start), as RegionHeat.key."""
        return (self.pid, self.start)


@dataclass(frozen=True)
class Plan:
    """The moves decide() planned for one tick, and notes on why it planned no more."""

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
    """What executing a plan (or the kernel, for kernel-executed engines) did: transfers, failures by reason, errors."""

    transfers: tuple[Transfer, ...] = ()
    failures: Mapping[str, int] = field(default_factory=dict)  # reason (FAILURE_REASONS) -> pages
    seconds: float = 0.0  # time the moves took (real or simulated)
    moved: tuple[tuple[int, int], ...] = ()  # keys (pid, start) of the regions that did move (all or most pages)
    errors: tuple[str, ...] = ()  # one line each: "pid 4242 exited during migration", never fatal


@dataclass(frozen=True)
class Gates:
    """Whether a kernel-executed engine may promote (into the fast tier) and demote (out of it) right now."""

    promote: bool = True
    demote: bool = False
