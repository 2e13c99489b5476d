"""The scenario model: what a scenario file says, as frozen dataclasses, and the file format's keys and defaults.

A Scenario is a set of NUMA nodes (capacity, unmanaged use), the processes that run on them (size, placement, a
timeline of access patterns) and scripted hotplug events. A Scenario built by `parse_scenario`
(cxltierd.emulate.scenario) holds only validated values: region_size is a whole number of pages; times, rates and
sizes are within the format's bounds; pids are unique; a process's phases start in increasing order and a growth
phase is its only phase; events are sorted by time and never remove an offline node or add an online one; every node
id is one of `nodes`; the process memory alive at once fits the nodes. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cxltierd.emulate.rasscript import RasScript


@dataclass(frozen=True)
class Zipf:
    """Accesses over the regions follow Zipf's law by rank; the ranking rotates by `shift` every `shift_period`."""

    kind: ClassVar[str] = "zipf"
    rate: float  # total accesses/s of the process
    skew: float
    shift_period: float | None = None
    shift: float = 0.25  # fraction of the address space the ranking rotates by at each shift


@dataclass(frozen=True)
class HotSet:
    """A contiguous hot set of `hot_fraction` of the regions takes `hot_share` of the accesses."""

    kind: ClassVar[str] = "hotset"
    rate: float
    hot_fraction: float
    hot_share: float
    shift_period: float | None = None
    shift: float = 0.25


@dataclass(frozen=True)
class Growth:
    """Memory grows by `grow_rate` bytes/s up to the process size; the newest regions are the hottest.

    A region is accessed at `region_rate` when allocated, decaying toward `cold_rate` with `half_life`. With `wrap`,
    once the size is reached allocation restarts at the oldest region, which becomes the newest (in place).
    """

    kind: ClassVar[str] = "growth"
    grow_rate: int  # bytes/s
    region_rate: float  # accesses/s of a new region
    half_life: float
    cold_rate: float = 0.0  # accesses/s of a region that has fully cooled
    initial: int = 0  # bytes allocated when the phase starts
    wrap: bool = False


@dataclass(frozen=True)
class Burst:
    """Every `period`, a block of `region_fraction` of the regions is hot (`rate`) for `duty` x period."""

    kind: ClassVar[str] = "burst"
    period: float
    duty: float
    rate: float  # total accesses/s over the burst regions while the burst lasts
    region_fraction: float = 1.0
    base_rate: float = 0.0  # total accesses/s over all regions outside bursts
    offset: float = 0.0  # seconds into each period when the burst starts


@dataclass(frozen=True)
class Groups:
    """`groups` equal groups (MoE experts); each `period` a seeded random set of `active` groups gets `active_share`."""

    kind: ClassVar[str] = "groups"
    groups: int
    active: int
    period: float
    rate: float
    active_share: float = 0.9


@dataclass(frozen=True)
class Uniform:
    """The rate spread evenly over the regions."""

    kind: ClassVar[str] = "uniform"
    rate: float


Pattern = Zipf | HotSet | Growth | Burst | Groups | Uniform


@dataclass(frozen=True)
class Phase:
    """One phase of a process's access pattern: the pattern, its rate and its parameters, from `at` on."""

    at: float  # scenario time the phase starts; it lasts until the next phase (or the process exits)
    pattern: Pattern


@dataclass(frozen=True)
class Placement:
    """Where new regions go: "first-touch", "interleave", "slow", or "node" (preferred `node`)."""

    kind: str
    node: int | None = None


@dataclass(frozen=True)
class ProcessSpec:
    """A simulated process: what selectors match, its size, placement, phases and lifetime."""

    name: str
    pid: int
    size: int
    phases: tuple[Phase, ...]
    placement: Placement = Placement("first-touch")
    cgroup: str = "/"
    cmdline: str = ""
    start_at: float = 0.0
    exit_at: float | None = None

    @property
    def growth(self) -> Growth | None:
        """The growth phase, if the process grows to its size over time."""
        p = self.phases[0].pattern
        return p if isinstance(p, Growth) else None


@dataclass(frozen=True)
class NodeSpec:
    """A simulated node: its capacity and the memory unmanaged software holds on it."""

    node: int
    capacity: int
    used: int = 0  # bytes held by unmanaged memory


@dataclass(frozen=True)
class Event:
    """A scripted hotplug event: a node removed or added at a scenario time."""

    at: float
    action: str  # "remove" or "add"
    node: int


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the simulated host, its nodes, processes and events, and the simulation's settings."""

    name: str
    description: str
    duration: float
    interval: float
    seed: int
    region_size: int
    host: str  # embedded host name or a fixture directory
    nodes: tuple[NodeSpec, ...]
    migration_bandwidth: int  # bytes/s
    sample_fraction: float  # share of accesses the simulated tracker sees; 0 = exact rates, no noise
    processes: tuple[ProcessSpec, ...]
    events: tuple[Event, ...] = ()
    ras_events: tuple[RasScript, ...] = ()  # scripted CXL errors (cxltierd.emulate.rasscript)
    source: str = "<scenario>"  # file it came from, for messages and relative host paths

    def node(self, n: int) -> NodeSpec:
        """The node spec of node n (KeyError when the scenario does not simulate it)."""
        for spec in self.nodes:
            if spec.node == n:
                return spec
        raise KeyError(n)


# The file format: the keys each mapping may hold, and the defaults of optional values.

TOP_KEYS = (
    "name",
    "description",
    "duration",
    "interval",
    "seed",
    "region_size",
    "host",
    "nodes",
    "migration_bandwidth",
    "sample_fraction",
    "processes",
    "events",
    "ras_events",
)
PROCESS_KEYS = ("name", "pid", "cgroup", "cmdline", "size", "placement", "start_at", "exit_at", "phases")
PLACEMENTS = ("first-touch", "interleave", "slow")
SHIFT_KEYS = ("shift_period", "shift")
PATTERN_KEYS: dict[str, tuple[str, ...]] = {
    "zipf": ("rate", "skew", *SHIFT_KEYS),
    "hotset": ("rate", "hot_fraction", "hot_share", *SHIFT_KEYS),
    "growth": ("grow_rate", "region_rate", "half_life", "cold_rate", "initial", "wrap"),
    "burst": ("period", "duty", "rate", "region_fraction", "base_rate", "offset"),
    "groups": ("groups", "active", "period", "rate", "active_share"),
    "uniform": ("rate",),
}
DEFAULT_INTERVAL = 1.0
DEFAULT_DURATION = 600.0
DEFAULT_SEED = 1
DEFAULT_REGION_SIZE = 2 << 20
DEFAULT_BANDWIDTH = 2 << 30
DEFAULT_SAMPLE_FRACTION = 0.01
FIRST_PID = 1000
