"""Scenario files: YAML -> validated frozen dataclasses describing a simulated memory system and its workloads.

`parse_scenario(data, source)` is pure: it checks every key (unknown keys get a did-you-mean, values their allowed
range) and raises ConfigError with one line that starts with the file name. The dataclasses, and the format's keys
and defaults, are in cxltierd.emulate.spec; cxltierd.emulate.load reads shipped scenarios and files, and
cxltierd.emulate.host checks node ids against a host (`check_nodes`). The format is documented in the header of every
shipped scenario and in README.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxltierd.emulate.rasscript import parse_ras_events
from cxltierd.emulate.spec import (
    DEFAULT_BANDWIDTH,
    DEFAULT_DURATION,
    DEFAULT_INTERVAL,
    DEFAULT_REGION_SIZE,
    DEFAULT_SAMPLE_FRACTION,
    DEFAULT_SEED,
    FIRST_PID,
    PATTERN_KEYS,
    PLACEMENTS,
    PROCESS_KEYS,
    TOP_KEYS,
    Burst,
    Event,
    Groups,
    Growth,
    HotSet,
    NodeSpec,
    Pattern,
    Phase,
    Placement,
    ProcessSpec,
    Scenario,
    Uniform,
    Zipf,
)
from cxltierd.model import PAGE_SIZE
from cxltierd.units import format_size
from cxltierd.validate import REQUIRED, Checker, join, node_id, show

MAX_RATE = 1e12
MAX_TIME = 1e7
MAX_CAPACITY = 1 << 50  # bytes of one node (1 PiB)
MAX_REGIONS = 1 << 20  # regions of all processes together (the simulator keeps state per region)
MIN_INTERVAL = 0.01  # seconds between ticks, as for the policy's interval


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
        ras_events=parse_ras_events(c, top.get("ras_events") or []),
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
