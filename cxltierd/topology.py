"""Topology: every memory node classified into a tier, tiers ordered fast to slow. Pure data, no I/O.

`classify(facts, overrides)` (the pure classification function) lives here too; the dataclasses below are the
contract every later stage (policy, engines, metrics, status) reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cxltierd.facts import HostFacts, NodeFacts, Region

# Tier kinds from fastest to slowest when nothing else orders them.
TIER_KINDS: tuple[str, ...] = ("hbm", "ddr", "cxl", "cxl-far", "pmem", "unknown")


@dataclass(frozen=True)
class Hmat:
    """Access figures of a node for its best CPU initiator (access1, else access0), in MiB/s and ns: the node's HMAT
    entries, or for a CXL node without them its region's (the kernel's CDAT + generic port computation)."""

    read_latency_ns: int | None = None
    write_latency_ns: int | None = None
    read_bandwidth_mbps: int | None = None
    write_bandwidth_mbps: int | None = None

    @property
    def cost(self) -> float | None:
        """Latency over bandwidth, (read + write latency) / (read + write bandwidth): what the kernel's memory tiers
        rank nodes by (their abstract distance scales with the latency ratio times the inverse bandwidth ratio to
        DRAM's). Lower is faster; None without a latency and a bandwidth. A missing write figure counts as the read."""
        rl, rb = self.read_latency_ns, self.read_bandwidth_mbps
        if rl is None or not rb:
            return None
        wl = self.write_latency_ns if self.write_latency_ns is not None else rl
        wb = self.write_bandwidth_mbps or rb
        return (rl + wl) / (rb + wb)


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
    cpu_distance: int | None = None  # smallest distance from a node with CPUs


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
        """The Node of node id n (KeyError when it is not a memory node here)."""
        for node in self.nodes:
            if node.node == n:
                return node
        raise KeyError(n)

    def tier_of(self, n: int) -> Tier:
        """The tier holding node n (KeyError when none does)."""
        for tier in self.tiers:
            if n in tier.nodes:
                return tier
        raise KeyError(n)

    @property
    def node_ids(self) -> tuple[int, ...]:
        """Every memory node's id, in the topology's node order."""
        return tuple(n.node for n in self.nodes)


# ---------------------------------------------------------------------------------------------------------------
# Classification: a pure function of the discovered facts plus overrides.

_KNOWN_ORDER = ("hbm", "ddr", "cxl", "cxl-far", "pmem")
HBM_BANDWIDTH_FACTOR = 2.0
CXL_FAR_FACTOR = 1.25  # a CXL node this many times slower to read than the nearest CXL node is a tier of its own


def _hmat(nf: NodeFacts, region: Region | None = None) -> Hmat | None:
    """The node's own access figures; failing those, those of the CXL region feeding it (7.3 shows a CXL node's
    figures only under its region, 6.12 under the node too)."""
    for a in (nf.access1, nf.access0, *((region.access1, region.access0) if region else ())):
        if a is not None and any(v is not None for v in (a.read_latency, a.read_bandwidth)):
            return Hmat(a.read_latency, a.write_latency, a.read_bandwidth, a.write_bandwidth)
    return None


def _memory_nodes(facts: HostFacts) -> list[NodeFacts]:
    """Nodes that hold memory: in has_memory, or with a MemTotal above zero (the kernel keeps the two in step; either
    is enough, so a damaged has_memory mask cannot hide a node whose meminfo shows memory)."""
    has_mem = set(facts.has_memory)
    return [n for n in facts.nodes if n.node in has_mem or (n.total_bytes or 0) > 0]


def _cxl_evidence(facts: HostFacts) -> dict[int, tuple[str, str, str]]:
    """Node -> (kind, region, reason) for nodes fed by a CXL region or an NVDIMM/pmem dax device."""
    out: dict[int, tuple[str, str, str]] = {}
    regions = {g.region: g for g in facts.regions}
    for d in facts.dax:
        if d.target_node is None or d.target_node < 0:
            continue
        region = regions.get(d.region or "")
        if d.kind == "cxl-ram" or (region is not None and region.mode == "ram"):
            out[d.target_node] = ("cxl", d.region or "", f"target of CXL {d.region} via {d.chardev}")
        elif d.kind in ("cxl-pmem", "nvdimm") or (region is not None and region.mode == "pmem"):
            out.setdefault(d.target_node, ("pmem", d.region or "", f"target of {d.kind} {d.chardev}"))
    bs = facts.kernel.block_size_bytes
    if bs:
        ranges = sorted(
            (g.resource, g.resource + g.size, g)
            for g in facts.regions
            if g.resource is not None and g.size and g.mode in ("ram", "pmem")
        )
        starts = [lo for lo, _, _ in ranges]
        for b in facts.blocks:
            if b.node is None or b.node in out:
                continue
            addr = b.block * bs
            i = bisect.bisect_right(starts, addr) - 1  # regions do not overlap: only the last one starting below
            if i >= 0 and addr < ranges[i][1]:
                g = ranges[i][2]
                out[b.node] = ("cxl" if g.mode == "ram" else "pmem", g.region, f"holds memory blocks of CXL {g.region}")
    return out


def _faster(a: dict[str, float | None], b: dict[str, float | None]) -> bool | None:
    """Is group a faster than group b, by the first figure both have (HMAT latency over bandwidth, latency, bandwidth,
    kernel tier, distance)?"""
    order = (
        ("cost", True),
        ("latency", True),
        ("bandwidth", False),
        ("kernel_tier", True),
        ("distance", True),
    )
    for key, lower_is_faster in order:
        x, y = a[key], b[key]
        if x is not None and y is not None and x != y:
            return (x < y) if lower_is_faster else (x > y)
    return None


def _cpu_distance(nf: NodeFacts, cpu_nodes: set[int]) -> int | None:
    values = [d for n, d in nf.distances.items() if n in cpu_nodes]
    return min(values) if values else None


def classify(facts: HostFacts, overrides: Mapping[int, str] | None = None) -> Topology:
    """Give every memory node a tier kind and order the tiers fast to slow (rules in README, "Tier classification")."""
    overrides = dict(overrides or {})
    kernel_tier = {n: t for t, ns in facts.kernel.memory_tiers.items() for n in ns}
    mem_nodes = _memory_nodes(facts)
    cpu_nodes = {n.node for n in facts.nodes if n.cpus}
    gpu_nodes = {g.node: g for g in facts.gpus}
    cxl = _cxl_evidence(facts)
    ddr_bw = [
        h.read_bandwidth_mbps
        for n in mem_nodes
        if n.cpus and (h := _hmat(n)) is not None and h.read_bandwidth_mbps is not None
    ]
    ddr_ref = max(ddr_bw) if ddr_bw else None

    regions = {g.region: g for g in facts.regions}
    classified: list[Node] = []
    for nf in mem_nodes:
        region = cxl[nf.node][1] if nf.node in cxl else None
        hmat = _hmat(nf, regions.get(region or ""))
        if nf.node in overrides:
            kind, reason = overrides[nf.node], "override in config"
        elif nf.node in cxl:
            kind, reason = cxl[nf.node][0], cxl[nf.node][2]
        elif not nf.cpus and nf.node in gpu_nodes:
            kind, reason = "hbm", f"NVIDIA GPU {gpu_nodes[nf.node].bdf} memory node"
        elif (
            not nf.cpus
            and hmat is not None
            and hmat.read_bandwidth_mbps is not None
            and ddr_ref is not None
            and hmat.read_bandwidth_mbps > HBM_BANDWIDTH_FACTOR * ddr_ref
        ):
            kind = "hbm"
            reason = f"CPU-less, HMAT bandwidth {hmat.read_bandwidth_mbps} MB/s > 2x DDR's {ddr_ref} MB/s"
        elif nf.cpus:
            kind, reason = "ddr", "node with CPUs"
        else:
            kind, reason = (
                "unknown",
                "CPU-less, no CXL region or GPU, bandwidth not HBM-class; placed by HMAT/tier/distance",
            )
        dist = dict(nf.distances)
        cpu_dist = _cpu_distance(nf, cpu_nodes)
        classified.append(
            Node(
                node=nf.node,
                kind=kind,
                reason=reason,
                cpus=nf.cpus,
                total_bytes=nf.total_bytes or 0,
                free_bytes=nf.free_bytes or 0,
                distances=dist,
                hmat=hmat,
                kernel_tier=kernel_tier.get(nf.node),
                region=region,
                cpu_distance=cpu_dist,
            )
        )
    classified = _split_far_cxl(classified, set(overrides))
    tiers = _order_tiers(classified)
    warnings = _kernel_disagreements(classified, tiers)
    return Topology(nodes=tuple(classified), tiers=tiers, warnings=tuple(warnings))


def _split_far_cxl(nodes: list[Node], fixed: set[int]) -> list[Node]:
    """CXL nodes of clearly different read latency (HMAT/CDAT) are two tiers: the nodes above the widest latency gap
    (a ratio of at least CXL_FAR_FACTOR between neighbours in latency order) become cxl-far (a device behind a switch,
    or on the other socket). Nodes without a latency, and nodes whose kind the config fixed, stay as they are."""
    lat = sorted(
        (n.hmat.read_latency_ns, n.node)
        for n in nodes
        if n.kind == "cxl" and n.node not in fixed and n.hmat is not None and n.hmat.read_latency_ns
    )
    if len(lat) < 2:
        return nodes
    ratio, i = max((lat[k + 1][0] / lat[k][0], k) for k in range(len(lat) - 1))
    if ratio < CXL_FAR_FACTOR:
        return nodes
    near = lat[i][0]
    far = {n: latency for latency, n in lat[i + 1 :]}
    return [
        replace(
            n,
            kind="cxl-far",
            reason=f"{n.reason}; read latency {far[n.node]} ns, {far[n.node] / near:.2f}x the nearer CXL tier's "
            f"{near} ns",
        )
        if n.node in far
        else n
        for n in nodes
    ]


def _group_evidence(nodes: list[Node]) -> dict[str, float | None]:
    def avg(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "cost": avg([c for n in nodes if n.hmat and (c := n.hmat.cost) is not None]),
        "latency": avg([n.hmat.read_latency_ns for n in nodes if n.hmat and n.hmat.read_latency_ns is not None]),
        "bandwidth": avg(
            [n.hmat.read_bandwidth_mbps for n in nodes if n.hmat and n.hmat.read_bandwidth_mbps is not None]
        ),
        "kernel_tier": avg([n.kernel_tier for n in nodes if n.kernel_tier is not None]),
        "distance": avg([n.cpu_distance for n in nodes if n.cpu_distance is not None]),
    }


def _order_tiers(nodes: list[Node]) -> tuple[Tier, ...]:
    """Known kinds in their fixed order; unknown nodes inserted before the first tier they beat on evidence."""
    by_kind: dict[str, list[Node]] = {}
    for n in nodes:
        by_kind.setdefault(n.kind if n.kind in TIER_KINDS else "unknown", []).append(n)
    order = [k for k in _KNOWN_ORDER if k in by_kind]
    if "unknown" in by_kind:
        unknown = _group_evidence(by_kind["unknown"])
        pos = len(order)
        for i, kind in enumerate(order):
            if _faster(unknown, _group_evidence(by_kind[kind])):
                pos = i
                break
        order.insert(pos, "unknown")
    return tuple(Tier(name=k, rank=i, nodes=tuple(sorted(n.node for n in by_kind[k]))) for i, k in enumerate(order))


def _kernel_disagreements(nodes: list[Node], tiers: tuple[Tier, ...]) -> list[str]:
    """Where cxltierd's tiers and the kernel's memory tiers (lower N = faster) disagree, one line per conflict."""
    rank = {n: t.rank for t in tiers for n in t.nodes}
    name = {t.rank: t.name for t in tiers}
    ours_by_kernel: dict[int, set[int]] = {}
    for n in nodes:
        if n.kernel_tier is not None:
            ours_by_kernel.setdefault(n.kernel_tier, set()).add(rank[n.node])
    out = []
    for kt, ranks in sorted(ours_by_kernel.items()):
        if len(ranks) > 1:
            groups = [
                f"{name[r]} node(s) {','.join(str(n.node) for n in nodes if n.kernel_tier == kt and rank[n.node] == r)}"
                for r in sorted(ranks)
            ]
            out.append(f"kernel memory_tier{kt} holds {' and '.join(groups)}: the kernel will not demote between them")
    kernel_tiers = sorted(ours_by_kernel)
    for i, a in enumerate(kernel_tiers):
        for b in kernel_tiers[i + 1 :]:
            # a is faster than b for the kernel; cxltierd must not rank any node of a below one of b
            if min(ours_by_kernel[a]) > max(ours_by_kernel[b]):
                out.append(
                    f"kernel memory_tier{a} ({'/'.join(name[r] for r in sorted(ours_by_kernel[a]))}) is ranked "
                    f"above memory_tier{b} ({'/'.join(name[r] for r in sorted(ours_by_kernel[b]))}), "
                    "the other way round from cxltierd"
                )
    return out
