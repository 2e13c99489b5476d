"""Scenario files: YAML -> validated frozen dataclasses describing a simulated memory system and its workloads.

`parse_scenario(data, source)` is pure: it checks every key (unknown keys get a did-you-mean, values their allowed
range) and raises ConfigError with one line that starts with the file name. `load_scenario(name_or_path)` reads a
shipped scenario (cxltierd/data/scenarios/NAME.yaml) or a file, parses it, and checks its node ids against the
host's topology (`check_nodes`). The format is documented in the header of every shipped scenario and in README.
"""

from __future__ import annotations

import atexit
import difflib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from cxltierd.errors import ConfigError
from cxltierd.topology import Tier, Topology
from cxltierd.units import format_size
from cxltierd.validate import REQUIRED, Checker, join, node_id, one_line_errors, parse_yaml, read_config, show

PAGE_SIZE = 4096
MAX_RATE = 1e12
MAX_TIME = 1e7
MAX_CAPACITY = 1 << 50  # bytes of one node (1 PiB)
MAX_REGIONS = 1 << 20  # regions of all processes together (the simulator keeps state per region)
MIN_INTERVAL = 0.01  # seconds between ticks, as for the policy's interval

# ---------------------------------------------------------------------------------------------------------------
# The data model.


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
    at: float  # scenario time the phase starts; it lasts until the next phase (or the process exits)
    pattern: Pattern


@dataclass(frozen=True)
class Placement:
    """Where new regions go: "first-touch", "interleave", "slow", or "node" (preferred `node`)."""

    kind: str
    node: int | None = None


@dataclass(frozen=True)
class ProcessSpec:
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
        p = self.phases[0].pattern
        return p if isinstance(p, Growth) else None


@dataclass(frozen=True)
class NodeSpec:
    node: int
    capacity: int
    used: int = 0  # bytes held by unmanaged memory


@dataclass(frozen=True)
class Event:
    at: float
    action: str  # "remove" or "add"
    node: int


@dataclass(frozen=True)
class Scenario:
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
    source: str = "<scenario>"  # file it came from, for messages and relative host paths

    def node(self, n: int) -> NodeSpec:
        for spec in self.nodes:
            if spec.node == n:
                return spec
        raise KeyError(n)


# ---------------------------------------------------------------------------------------------------------------
# Parsing.

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


def parse_scenario(data: Any, source: str = "scenario.yaml") -> Scenario:
    """Validate a loaded YAML document into a Scenario. Pure; raises ConfigError naming the file and key path.

    Node ids are checked against the scenario's own `nodes:`; check them against a host with `check_nodes`.
    """
    c = Checker(source, lenient=True)
    top = c.mapping(data, "", TOP_KEYS, required=("nodes", "processes"))
    region_size = c.size(top, "region_size", "", DEFAULT_REGION_SIZE, lo=PAGE_SIZE, hi=1 << 30)
    if region_size % PAGE_SIZE:
        c.fail("region_size", f"must be a multiple of {PAGE_SIZE} (the page size), got {show(top['region_size'])}")
    nodes = _parse_nodes(c, top["nodes"])
    node_ids = tuple(n.node for n in nodes)
    duration = c.seconds(top, "duration", "", DEFAULT_DURATION, hi=MAX_TIME, lo_open=True)
    processes = _parse_processes(c, top["processes"], node_ids, region_size)
    regions = sum(-(-p.size // region_size) for p in processes)
    if regions > MAX_REGIONS:
        c.fail(
            "processes",
            f"{regions} regions of {format_size(region_size)} in all, more than {MAX_REGIONS} "
            "(use a larger region_size or smaller processes)",
        )
    events = _parse_events(c, top.get("events") or [], node_ids)
    scenario = Scenario(
        name=c.string(top, "name", "", Path(source).stem),
        description=str(top.get("description") or "").strip(),
        duration=duration,
        interval=c.seconds(top, "interval", "", DEFAULT_INTERVAL, lo=MIN_INTERVAL, hi=3600.0),
        seed=c.integer(top, "seed", "", DEFAULT_SEED, lo=0),
        region_size=region_size,
        host=c.string(top, "host", "", "default"),
        nodes=nodes,
        migration_bandwidth=c.size(top, "migration_bandwidth", "", DEFAULT_BANDWIDTH, lo=PAGE_SIZE),
        sample_fraction=c.number(top, "sample_fraction", "", DEFAULT_SAMPLE_FRACTION, lo=0.0, hi=1.0),
        processes=processes,
        events=events,
        source=source,
    )
    _check_room(c, scenario)
    return scenario


def _parse_nodes(c: Checker, value: Any) -> tuple[NodeSpec, ...]:
    if not isinstance(value, Mapping) or not value:
        c.fail("nodes", f"must be a mapping of node id -> capacity (e.g. {{0: 2GiB, 2: 8GiB}}), got {show(value)}")
    out = []
    for key, spec in value.items():
        node = node_id(key, hi=1 << 30)
        if node is None:
            c.fail(
                join("nodes", key if isinstance(key, str) else show(key)),
                f"node ids must be integers >= 0, got {show(key)}",
            )
        path = f"nodes.{node}"
        if isinstance(spec, Mapping):
            m = c.mapping(spec, path, ("capacity", "used"), required=("capacity",))
            capacity = c.size(m, "capacity", path, lo=PAGE_SIZE, hi=MAX_CAPACITY)
            used = c.size(m, "used", path, 0, hi=capacity)
        else:
            capacity = c.size({"capacity": spec}, "capacity", path, lo=PAGE_SIZE, hi=MAX_CAPACITY)
            used = 0
        out.append(NodeSpec(node, capacity, used))
    return tuple(sorted(out, key=lambda n: n.node))


def _parse_processes(c: Checker, value: Any, node_ids: tuple[int, ...], region_size: int) -> tuple[ProcessSpec, ...]:
    items = c.sequence(value, "processes")
    if not items:
        c.fail("processes", "must list at least one process")
    explicit = {p["pid"] for p in items if isinstance(p, Mapping) and isinstance(p.get("pid"), int)}
    next_pid = FIRST_PID
    out: list[ProcessSpec] = []
    seen: dict[int, str] = {}
    for i, item in enumerate(items):
        path = f"processes[{i}]"
        m = c.mapping(item, path, PROCESS_KEYS, required=("name", "size", "phases"))
        name = c.string(m, "name", path)
        pid = c.integer(m, "pid", path, None, lo=1, hi=4194304)
        if pid is None:
            while next_pid in explicit or next_pid in seen:
                next_pid += 1
            pid = next_pid
        if pid in seen:
            c.fail(f"{path}.pid", f"pid {pid} is already used by process {seen[pid]!r}")
        seen[pid] = f"processes[{i}]"
        size = c.size(m, "size", path, lo=PAGE_SIZE, hi=1 << 50)
        start_at = c.seconds(m, "start_at", path, 0.0, hi=MAX_TIME)
        exit_at = c.seconds(m, "exit_at", path, None, lo=start_at, hi=MAX_TIME, lo_open=True)
        n_regions = -(-size // region_size)
        phases = _parse_phases(c, m["phases"], f"{path}.phases", start_at, size, n_regions)
        out.append(
            ProcessSpec(
                name=name,
                pid=pid,
                size=size,
                phases=phases,
                placement=_parse_placement(c, m, path, node_ids),
                cgroup=c.string(m, "cgroup", path, "/"),
                cmdline=c.string(m, "cmdline", path, name),
                start_at=start_at,
                exit_at=exit_at,
            )
        )
    return tuple(out)


def _parse_placement(c: Checker, m: dict, path: str, node_ids: tuple[int, ...]) -> Placement:
    if isinstance(m.get("placement"), Mapping):
        where = join(path, "placement")
        placement = c.mapping(m["placement"], where, ("node",), required=("node",))
        node = c.integer(placement, "node", where, lo=0)
        if node not in node_ids:
            c.fail(f"{where}.node", f"node {node} is not in nodes: ({', '.join(map(str, node_ids))})")
        return Placement("node", node)
    return Placement(c.choice(m, "placement", path, PLACEMENTS, "first-touch", other="{node: N}"))


def _parse_phases(c: Checker, value: Any, path: str, start_at: float, size: int, n_regions: int) -> tuple[Phase, ...]:
    items = c.sequence(value, path)
    if not items:
        c.fail(path, "must list at least one phase")
    out: list[Phase] = []
    for i, item in enumerate(items):
        ppath = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            c.fail(ppath, f"must be a mapping with 'pattern' and its keys, got {show(item)}")
        kind = c.choice(item, "pattern", ppath, PATTERN_KEYS)
        m = c.mapping(item, ppath, ("at", "pattern", *PATTERN_KEYS[kind]))
        default_at = start_at if i == 0 else REQUIRED
        at = c.seconds(m, "at", ppath, default_at, hi=MAX_TIME)
        if i == 0 and at < start_at:
            c.fail(
                f"{ppath}.at", f"the first phase cannot start before the process (start_at {start_at:g}), got {at:g}"
            )
        if out and at <= out[-1].at:
            c.fail(f"{ppath}.at", f"phases must start in increasing order, got {at:g} after {out[-1].at:g}")
        pattern = _parse_pattern(c, kind, m, ppath, size, n_regions)
        if isinstance(pattern, Growth) and len(items) > 1:
            c.fail(ppath, "a growth phase must be the process's only phase (use another process for other traffic)")
        out.append(Phase(at, pattern))
    return tuple(out)


def _shift(c: Checker, m: dict, path: str) -> tuple[float | None, float]:
    period = c.seconds(m, "shift_period", path, None, hi=MAX_TIME, lo_open=True)
    shift = c.number(m, "shift", path, 0.25, lo=0.0, hi=1.0, lo_open=True)
    if "shift" in m and period is None:
        c.fail(f"{path}.shift", "needs shift_period (how often the hot set moves)")
    return period, shift


def _parse_pattern(c: Checker, kind: str, m: dict, path: str, size: int, n_regions: int) -> Pattern:
    def rate(key: str = "rate", default: Any = REQUIRED) -> float:
        return float(c.number(m, key, path, default, lo=0.0, hi=MAX_RATE))

    def fraction(key: str, default: Any = REQUIRED, lo_open: bool = True) -> float:
        return float(c.number(m, key, path, default, lo=0.0, hi=1.0, lo_open=lo_open))

    if kind == "zipf":
        period, shift = _shift(c, m, path)
        return Zipf(rate(), c.number(m, "skew", path, lo=0.0, hi=5.0, lo_open=True), period, shift)
    if kind == "hotset":
        period, shift = _shift(c, m, path)
        return HotSet(rate(), fraction("hot_fraction"), fraction("hot_share", lo_open=False), period, shift)
    if kind == "growth":
        return Growth(
            grow_rate=c.size(m, "grow_rate", path, lo=1),
            region_rate=rate("region_rate"),
            half_life=c.seconds(m, "half_life", path, hi=MAX_TIME, lo_open=True),
            cold_rate=rate("cold_rate", 0.0),
            initial=c.size(m, "initial", path, 0, hi=size),
            wrap=c.boolean(m, "wrap", path, False),
        )
    if kind == "burst":
        period = c.seconds(m, "period", path, hi=MAX_TIME, lo_open=True)
        duty = fraction("duty")
        offset = c.seconds(m, "offset", path, 0.0, hi=period * (1 - duty))
        return Burst(period, duty, rate(), fraction("region_fraction", 1.0), rate("base_rate", 0.0), offset)
    if kind == "groups":
        groups = c.integer(m, "groups", path, lo=1, hi=n_regions)
        active = c.integer(m, "active", path, lo=1, hi=groups)
        period = c.seconds(m, "period", path, hi=MAX_TIME, lo_open=True)
        return Groups(groups, active, period, rate(), fraction("active_share", 0.9, lo_open=False))
    return Uniform(rate())


def _parse_events(c: Checker, value: Any, node_ids: tuple[int, ...]) -> tuple[Event, ...]:
    items = c.sequence(value, "events")
    out: list[Event] = []
    for i, item in enumerate(items):
        path = f"events[{i}]"
        m = c.mapping(item, path, ("at", "remove_node", "add_node"), required=("at",))
        actions = [k for k in ("remove_node", "add_node") if k in m]
        if len(actions) != 1:
            c.fail(path, "needs exactly one of remove_node: N or add_node: N")
        node = c.integer(m, actions[0], path, lo=0)
        if node not in node_ids:
            c.fail(f"{path}.{actions[0]}", f"node {node} is not in nodes: ({', '.join(map(str, node_ids))})")
        out.append(Event(c.seconds(m, "at", path, hi=MAX_TIME), actions[0].removesuffix("_node"), node))
    order = sorted(range(len(out)), key=lambda k: out[k].at)
    live = set(node_ids)
    for k in order:
        e = out[k]
        if e.action == "remove" and e.node not in live:
            c.fail(f"events[{k}].remove_node", f"node {e.node} is already removed at {e.at:g} s")
        if e.action == "add" and e.node in live:
            c.fail(f"events[{k}].add_node", f"node {e.node} is online at {e.at:g} s (remove it first)")
        (live.discard if e.action == "remove" else live.add)(e.node)
    return tuple(out[k] for k in order)


def _check_room(c: Checker, s: Scenario) -> None:
    """The peak of process memory alive at once must fit in the nodes (capacity minus unmanaged use)."""
    room = sum(n.capacity - n.used for n in s.nodes)
    changes = sorted(
        [(p.start_at, 1, p.size) for p in s.processes]
        + [(p.exit_at, 0, -p.size) for p in s.processes if p.exit_at is not None]
    )
    live = 0
    for at, _, delta in changes:
        live += delta
        if live > room:
            c.fail(
                "processes",
                f"{format_size(live)} of process memory is alive at {at:g} s, more than the "
                f"{format_size(room)} the nodes have (capacity - used)",
            )


# ---------------------------------------------------------------------------------------------------------------
# Shipped scenarios, files, and the host they run on (the only I/O here).


def _scenario_dir() -> Any:
    return resources.files("cxltierd") / "data" / "scenarios"


def scenario_names() -> list[str]:
    """Names of the scenarios shipped in cxltierd/data/scenarios."""
    return sorted(p.name.removesuffix(".yaml") for p in _scenario_dir().iterdir() if p.name.endswith(".yaml"))


def read_scenario(name_or_path: str | Path) -> Scenario:
    """Parse a shipped scenario (by name) or a YAML file, without checking it against its host."""
    text, source = _read(name_or_path)
    with one_line_errors(source):
        return parse_scenario(parse_yaml(text, source), source)


def load_scenario(name_or_path: str | Path, topology: Topology | None = None) -> Scenario:
    """A validated scenario: shipped name or file path. Node ids are checked against `topology`, or against the
    scenario's host (discovered: I/O) when no topology is given."""
    scenario = read_scenario(name_or_path)
    check_nodes(scenario, topology if topology is not None else host_topology(scenario))
    return scenario


def _read(name_or_path: str | Path) -> tuple[str, str]:
    path = Path(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or "/" in str(name_or_path) or path.suffix in (".yaml", ".yml")
    if looks_like_path or path.is_file():
        try:
            return read_config(path, "scenario file").decode("utf-8"), str(name_or_path)
        except UnicodeDecodeError:
            raise ConfigError(f"{name_or_path}: not a text file") from None
    names = scenario_names()
    if str(name_or_path) not in names:
        close = difflib.get_close_matches(str(name_or_path), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{name_or_path}: no such scenario file and not a shipped scenario ({hint}shipped: {', '.join(names)})"
        )
    return (_scenario_dir() / f"{name_or_path}.yaml").read_text(encoding="utf-8"), f"{name_or_path}.yaml"


def check_nodes(scenario: Scenario, topology: Topology) -> None:
    """Raise ConfigError unless every node of the scenario is a memory node of the host topology. Pure."""
    known = topology.node_ids
    for spec in scenario.nodes:
        if spec.node not in known:
            raise ConfigError(
                f"{scenario.source}: nodes.{spec.node}: node {spec.node} is not a memory node of host "
                f"{scenario.host!r} (its nodes: {', '.join(map(str, known))})"
            )


def host_root(scenario: Scenario) -> Path:
    """The root directory of the scenario's host: an embedded host (unpacked once) or a fixture directory, relative
    to the working directory or else to the scenario file."""
    from cxltierd import embedded

    if scenario.host in embedded.host_names():
        if scenario.host == "default":
            return embedded.default_root()
        if scenario.host not in _extracted:
            tmp = Path(tempfile.mkdtemp(prefix="cxltierd-host-"))
            atexit.register(shutil.rmtree, tmp, True)
            _extracted[scenario.host] = embedded.extract_host(tmp / "root", scenario.host)
        return _extracted[scenario.host]
    path = Path(scenario.host)
    if not path.is_absolute() and not path.is_dir():
        beside = Path(scenario.source).parent / path
        if beside.is_dir():
            return beside
    if not path.is_dir():
        raise ConfigError(
            f"{scenario.source}: host: {scenario.host!r} is neither an embedded host "
            f"({', '.join(embedded.host_names())}) nor a directory"
        )
    return path


_extracted: dict[str, Path] = {}


def host_topology(scenario: Scenario) -> Topology:
    """Discover and classify the scenario's host (reads its fixture tree)."""
    from cxltierd.discovery import discover
    from cxltierd.hostfs import HostFS
    from cxltierd.topology import classify

    return classify(discover(HostFS(host_root(scenario))))


def simulated_topology(scenario: Scenario, topology: Topology) -> Topology:
    """The host topology cut down to the scenario's nodes, with the scenario's capacities; tiers re-ranked. Pure."""
    specs = {n.node: n for n in scenario.nodes}
    nodes = tuple(
        replace(n, total_bytes=specs[n.node].capacity, free_bytes=specs[n.node].capacity - specs[n.node].used)
        for n in topology.nodes
        if n.node in specs
    )
    tiers: list[Tier] = []
    for tier in topology.tiers:
        members = tuple(n for n in tier.nodes if n in specs)
        if members:
            tiers.append(Tier(tier.name, len(tiers), members))
    return Topology(nodes=nodes, tiers=tuple(tiers), warnings=topology.warnings)
