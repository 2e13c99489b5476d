"""NUMA nodes (/sys/devices/system/node) and memory blocks (/sys/devices/system/memory)."""

from __future__ import annotations

from cxltierd.discovery.parse import (
    index_of,
    indexes,
    parse_cpulist,
    parse_distance,
    parse_meminfo,
    parse_zoneinfo,
)
from cxltierd.discovery.reader import Reader
from cxltierd.facts import Access, MemoryBlock, MemSideCache, NodeFacts
from cxltierd.model import PAGE_SIZE

NODE = "/sys/devices/system/node"
MEMORY = "/sys/devices/system/memory"


def read_masks(r: Reader) -> dict[str, tuple[int, ...]]:
    """online, possible, has_cpu, has_memory node masks (cpulist format)."""
    out: dict[str, tuple[int, ...]] = {}
    for name in ("online", "possible", "has_cpu", "has_memory"):
        value = r.parse(f"{NODE}/{name}", parse_cpulist, required=name in ("online", "possible"))
        out[name] = value if value is not None else ()
    return out


def read_access(r: Reader, base: str) -> Access | None:
    """nodeN/accessY/initiators or regionZ/accessY: read/write latency and bandwidth, plus initiator nodes."""
    if not r.fs.is_dir(base):
        return None
    initiators = tuple(sorted(n for n in (index_of(e, "node") for e in r.fs.listdir(base)) if n is not None))
    return Access(
        read_latency=r.int(f"{base}/read_latency", required=False),
        write_latency=r.int(f"{base}/write_latency", required=False),
        read_bandwidth=r.int(f"{base}/read_bandwidth", required=False),
        write_bandwidth=r.int(f"{base}/write_bandwidth", required=False),
        initiators=initiators,
    )


def read_caches(r: Reader, base: str) -> tuple[MemSideCache, ...]:
    """A node's memory-side caches (memory_side_cache/indexN): size, line size, indexing and write policy."""
    caches = []
    for entry in r.fs.listdir(base):
        idx = index_of(entry, "index")
        if idx is None:
            continue
        d = f"{base}/{entry}"
        caches.append(
            MemSideCache(
                index=idx,
                size=r.int(f"{d}/size", required=False),
                line_size=r.int(f"{d}/line_size", required=False),
                indexing=r.int(f"{d}/indexing", required=False),
                write_policy=r.int(f"{d}/write_policy", required=False),
            )
        )
    return tuple(caches)


def read_node(r: Reader, n: int, online: tuple[int, ...]) -> NodeFacts:
    """One node: CPUs, meminfo totals, distances to the online nodes, HMAT access classes, caches and memory blocks."""
    d = f"{NODE}/node{n}"
    entries = r.fs.listdir(d)
    meminfo = r.parse(f"{d}/meminfo", parse_meminfo) or {}
    distances = r.parse(f"{d}/distance", lambda t: parse_distance(t, online)) or {}
    blocks = tuple(indexes(entries, "memory"))
    return NodeFacts(
        node=n,
        cpus=r.parse(f"{d}/cpulist", parse_cpulist) or (),
        total_bytes=meminfo.get("MemTotal"),
        free_bytes=meminfo.get("MemFree"),
        used_bytes=meminfo.get("MemUsed"),
        distances=distances,
        access0=read_access(r, f"{d}/access0/initiators"),
        access1=read_access(r, f"{d}/access1/initiators"),
        caches=read_caches(r, f"{d}/memory_side_cache"),
        blocks=blocks,
    )


def read_nodes(r: Reader, online: tuple[int, ...]) -> tuple[NodeFacts, ...]:
    """Every nodeN directory present (online nodes; a missing one is warned about)."""
    present = sorted(n for n in (index_of(e, "node") for e in r.fs.listdir(NODE)) if n is not None)
    for n in online:
        if n not in present:
            r.warn(f"{r.fs.path(f'{NODE}/node{n}')}: node {n} is online but has no directory")
    return tuple(read_node(r, n, online) for n in present)


def read_blocks(
    r: Reader,
    nodes: tuple[NodeFacts, ...],
    block_size: int | None,
    detail_ranges: list[tuple[int, int]],
    kmem_ranges: list[tuple[int, int, int]] | None = None,
) -> tuple[MemoryBlock, ...]:
    """All memory blocks with their node; state and zone for blocks inside `detail_ranges` (CXL/dax ranges).

    The node of each block comes from the nodes' memoryX links (one listdir per node), not per-block realpaths.
    /proc/zoneinfo saves most per-block reads: the blocks of the kmem dax devices feeding a node (`kmem_ranges`:
    start, end, node) are all online when the node's present pages equal their total size, and an online block's
    zone is its node's only populated zone when there is just one. Otherwise each block's state and valid_zones
    are read. Tens of thousands of blocks stay fast this way.
    """
    node_of: dict[int, int] = {}
    for nf in nodes:
        for b in nf.blocks:
            node_of[b] = nf.node
    zoneinfo = r.parse("/proc/zoneinfo", parse_zoneinfo, required=False) or {}
    only_zone = {}
    present = {}
    for n, zones in zoneinfo.items():
        populated = [z for z, (_, managed) in zones.items() if managed]
        if len(populated) == 1:
            only_zone[n] = populated[0]
        present[n] = sum(p for p, _ in zones.values()) * PAGE_SIZE
    fed: dict[int, int] = {}
    for lo, hi, n in kmem_ranges or []:
        fed[n] = fed.get(n, 0) + hi - lo
    known_online = _merge([(lo, hi) for lo, hi, n in kmem_ranges or [] if present.get(n) == fed[n]])
    ranges = [(lo // block_size, -(-hi // block_size)) for lo, hi in _merge(detail_ranges)] if block_size else []
    online = [(lo // block_size, hi // block_size) for lo, hi in known_online] if block_size else []
    out = []
    ri = oi = 0  # blocks and both range lists are sorted: walk them together
    for idx in indexes(r.fs.listdir(MEMORY, sort=False), "memory"):
        node = node_of.get(idx)
        while ri < len(ranges) and ranges[ri][1] <= idx:
            ri += 1
        if ri == len(ranges) or idx < ranges[ri][0]:
            out.append(MemoryBlock(idx, node))
            continue
        while oi < len(online) and online[oi][1] <= idx:
            oi += 1
        if oi < len(online) and online[oi][0] <= idx:
            state: str | None = "online"
        else:
            state = r.text(f"{MEMORY}/memory{idx}/state", required=False)
        zone = None
        if state == "online":
            zone = only_zone.get(node) if node is not None else None
            if zone is None:
                zone = r.text(f"{MEMORY}/memory{idx}/valid_zones", required=False)
        out.append(MemoryBlock(idx, node, state, zone))
    return tuple(out)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or nested [lo, hi) ranges merged into sorted disjoint ones."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def read_memory_tiers(r: Reader) -> dict[int, tuple[int, ...]]:
    """/sys/devices/virtual/memory_tiering/memory_tierN/nodelist -> {N: nodes}."""
    base = "/sys/devices/virtual/memory_tiering"
    tiers: dict[int, tuple[int, ...]] = {}
    for entry in r.fs.listdir(base):
        n = index_of(entry, "memory_tier")
        if n is None:
            continue
        nodes = r.parse(f"{base}/{entry}/nodelist", parse_cpulist)
        if nodes is not None:
            tiers[n] = nodes
    return tiers
