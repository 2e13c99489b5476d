"""Memory-bandwidth counters the kernel's perf PMUs offer, found in /sys/bus/event_source/devices.

Two kinds count a node's memory traffic: the uncore memory controllers (`uncore_imc_N`, events `cas_count_read` /
`cas_count_write`, one PMU per controller, counted on one CPU of each socket in its `cpumask`; the socket's DDR node is
that CPU's node) and CXL PMUs (`cxl_pmu_memX.Y`, events `s2m_drs_memdata` (data the device returns: reads) and
`m2s_rwd_memwr` (writes), one 64-byte line each; memX's node is the node its region is onlined as). Each event is
encoded into perf_event_attr's config words from the PMU's `format/` files ("config:0-7", "config1:16", ...) and
its `events/NAME` file ("event=0x04,umask=0x03", or "config=0x..."), with the `events/NAME.scale` / `.unit` pair
giving bytes per count (Intel's cas_count: 6.103515625e-5 MiB, i.e. 64 bytes). The parsers are pure; `find` reads
the tree through HostFS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cxltierd.errors import HostFSError
from cxltierd.facts import HostFacts
from cxltierd.hostfs import HostFS

DEVICES = "/sys/bus/event_source/devices"
LINE = 64  # bytes per CXL transaction counted (one cache line)
IMC_EVENTS = {"cas_count_read": "read", "cas_count_write": "write"}
CXL_EVENTS = {"s2m_drs_memdata": "read", "m2s_rwd_memwr": "write"}
UNITS = {"": 1.0, "b": 1.0, "bytes": 1.0, "kib": 1024.0, "mib": 1024.0**2, "gib": 1024.0**3}
_IMC = re.compile(r"uncore_imc(_\d+)?$")
_CXL = re.compile(r"cxl_pmu_(mem\d+)\.\d+$")


@dataclass(frozen=True)
class Counter:
    """One perf counter to open: PMU type and config words, the CPU to count on, the node whose traffic it counts,
    bytes per count and the direction (read or write)."""

    pmu: str
    event: str
    type: int
    config: int
    config1: int
    config2: int
    cpu: int
    node: int
    bytes_per_count: float
    direction: str


@dataclass(frozen=True)
class Telemetry:
    """The bandwidth counters found (empty: none) and one line saying which source the perf model uses and why."""

    counters: tuple[Counter, ...]
    reason: str

    def nodes(self) -> tuple[int, ...]:
        """The nodes at least one counter measures."""
        return tuple(sorted({c.node for c in self.counters}))


def parse_format(text: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """A format file ("config:0-7", "config1:16", "config:0-7,32-35") -> (config word, ((lo, hi), ...))."""
    m = re.fullmatch(r"\s*(config[12]?)\s*:\s*([\d,\-\s]+?)\s*", text)
    if not m:
        raise ValueError(f"not a perf format: {text.strip()!r}")
    spans = []
    for part in m.group(2).split(","):
        lo, _, hi = part.strip().partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 63:
            raise ValueError(f"bad bit range {part.strip()!r} in {text.strip()!r}")
        spans.append((a, b))
    return m.group(1), tuple(spans)


def parse_terms(text: str) -> dict[str, int]:
    """An events file ("event=0x04,umask=0x03", "config=0x1e98...") -> {term: value}; a bare term means 1."""
    out: dict[str, int] = {}
    for part in text.strip().split(","):
        name, eq, value = part.strip().partition("=")
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad event term {part.strip()!r} in {text.strip()!r}")
        out[name] = int(value, 0) if eq else 1
    return out


def encode(terms: Mapping[str, int], formats: Mapping[str, tuple[str, tuple[tuple[int, int], ...]]]) -> list[int]:
    """[config, config1, config2] for the terms, each value's bits spread over its format's ranges low bits first.
    The term `config` (or config1/config2) sets that word whole."""
    words = [0, 0, 0]
    index = {"config": 0, "config1": 1, "config2": 2}
    for name, value in terms.items():
        if name in index:
            words[index[name]] |= value
            continue
        if name not in formats:
            raise ValueError(f"term {name!r} has no format file")
        word, spans = formats[name]
        for lo, hi in spans:
            width = hi - lo + 1
            words[index[word]] |= (value & ((1 << width) - 1)) << lo
            value >>= width
        if value:
            raise ValueError(f"value of {name!r} does not fit its format")
    return words


def parse_cpulist(text: str) -> list[int]:
    """A CPU list ("0", "0,28", "0-3,8") -> CPU ids."""
    out: list[int] = []
    for part in text.strip().split(","):
        if part.strip():
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def bytes_per_count(scale: str | None, unit: str | None, default: float) -> float:
    """Bytes one count stands for, from an event's .scale and .unit files (either missing: `default`)."""
    if scale is None:
        return default
    factor = UNITS.get((unit or "").strip().lower())
    if factor is None:
        raise ValueError(f"unknown unit {unit!r}")
    return float(scale.strip()) * factor


def _pmu_counters(
    fs: HostFS, pmu: str, events: Mapping[str, str], default: float, targets: list[tuple[int, int]]
) -> list[Counter]:
    """Counters for `events` of one PMU on each (cpu, node) target; raises ValueError/HostFSError on bad files."""
    base = f"{DEVICES}/{pmu}"
    kind = fs.read_int(f"{base}/type")
    formats = {name: parse_format(fs.read(f"{base}/format/{name}")) for name in fs.listdir(f"{base}/format")}
    out = []
    for event, direction in events.items():
        text = fs.read_optional(f"{base}/events/{event}")
        if text is None:
            continue
        words = encode(parse_terms(text), formats)
        size = bytes_per_count(
            fs.read_optional(f"{base}/events/{event}.scale"), fs.read_optional(f"{base}/events/{event}.unit"), default
        )
        for cpu, node in targets:
            out.append(Counter(pmu, event, kind, words[0], words[1], words[2], cpu, node, size, direction))
    return out


def find(fs: HostFS, facts: HostFacts) -> Telemetry:
    """The memory-bandwidth counters of this host (see the module docstring) and why the perf model uses them or
    falls back to access-rate estimates. A PMU whose files do not parse is left out and named in the reason."""
    try:
        pmus = fs.listdir(DEVICES)
    except HostFSError:
        return Telemetry((), f"no {DEVICES}: the perf model runs on access-rate estimates")
    cpu_node = {c: n.node for n in facts.nodes for c in n.cpus}
    memdev_node = {
        m.memdev: node
        for r in facts.regions
        if (node := facts.region_node(r.region)) is not None
        for m in r.mappings
        if m.memdev
    }
    counters: list[Counter] = []
    bad: list[str] = []
    for pmu in pmus:
        try:
            if _IMC.match(pmu):
                cpus = parse_cpulist(fs.read(f"{DEVICES}/{pmu}/cpumask"))
                targets = [(c, cpu_node[c]) for c in cpus if c in cpu_node]
                counters += _pmu_counters(fs, pmu, IMC_EVENTS, LINE, targets)
            elif m := _CXL.match(pmu):
                node = memdev_node.get(m.group(1))
                cpus = parse_cpulist(fs.read_optional(f"{DEVICES}/{pmu}/cpumask") or "0")
                if node is not None and cpus:
                    counters += _pmu_counters(fs, pmu, CXL_EVENTS, LINE, [(cpus[0], node)])
        except (HostFSError, ValueError, OSError) as e:
            bad.append(f"{pmu} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    skipped = f"; unreadable: {', '.join(bad)}" if bad else ""
    if not counters:
        return Telemetry(
            (),
            "no uncore_imc or cxl_pmu memory-bandwidth counters in /sys/bus/event_source/devices: the perf model "
            "runs on access-rate estimates" + skipped,
        )
    kinds = sorted({"uncore_imc" if _IMC.match(c.pmu) else "cxl_pmu" for c in counters})
    nodes = ",".join(str(n) for n in sorted({c.node for c in counters}))
    return Telemetry(
        tuple(counters),
        f"measured bandwidth from {' and '.join(kinds)} counters on node(s) {nodes} ({len(counters)} counters); "
        f"other nodes on access-rate estimates" + skipped,
    )
