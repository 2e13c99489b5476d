"""Per-tick readers of the live host: node memory (free and available), node counters, node physical ranges, processes.

Discovery (cxltierd.discovery) reads the topology once and again on hotplug; the engines read these figures every
tick. Both go through HostFS, so fixture trees work for either; parsing is in cxltierd.discovery.parse.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxltierd.discovery.parse import (
    available_bytes,
    page_size_of,
    parse_cgroup,
    parse_keyvals,
    parse_meminfo,
    parse_status,
    parse_watermarks,
)
from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.model import PAGE_SIZE

NODE = "/sys/devices/system/node/node{}"


@dataclass(frozen=True)
class ProcInfo:
    """A user process as /proc shows it: what the policy's selectors match on, and its resident size."""

    pid: int
    name: str
    cmdline: str
    cgroup: str
    rss: int  # bytes


def read_process(fs: HostFS, pid: int) -> ProcInfo | None:
    """One process, or None when it is gone, a kernel thread, or unreadable."""
    base = f"/proc/{pid}"
    try:
        name, rss = parse_status(fs.read(f"{base}/status"))
        if rss is None:
            return None
        cmdline = fs.read(f"{base}/cmdline").replace("\0", " ").strip()
        cgroup = parse_cgroup(fs.read_optional(f"{base}/cgroup") or "")
    except HostFSError:
        return None
    return ProcInfo(pid=pid, name=name, cmdline=cmdline, cgroup=cgroup, rss=rss)


def list_processes(fs: HostFS, min_rss: int = 0) -> list[ProcInfo]:
    """User processes with at least `min_rss` resident bytes, largest first."""
    out = []
    for entry in fs.listdir("/proc"):
        if entry.isdigit():
            p = read_process(fs, int(entry))
            if p is not None and p.rss >= min_rss:
                out.append(p)
    return sorted(out, key=lambda p: -p.rss)


@dataclass(frozen=True)
class NodeMemory:
    """Memory of each node now, in bytes: `free` is MemFree; `available` is what the kernel can hand out without
    costly reclaim (free above the reserve, plus most of the page cache and reclaimable slab: parse.available_bytes);
    `total` is MemTotal."""

    free: dict[int, int]
    available: dict[int, int]
    total: dict[int, int]


def node_memory(fs: HostFS, nodes: list[int]) -> NodeMemory:
    """Free, available and total bytes per node from nodeN/meminfo and the zone watermarks in /proc/zoneinfo; a node
    whose meminfo is gone is left out (unplugged). Without a readable zoneinfo, available holds nothing back."""
    free: dict[int, int] = {}
    available: dict[int, int] = {}
    total: dict[int, int] = {}
    try:
        marks = parse_watermarks(fs.read("/proc/zoneinfo"))
    except (HostFSError, ValueError):
        marks = {}
    for n in nodes:
        try:
            info = parse_meminfo(fs.read(NODE.format(n) + "/meminfo"))
        except (HostFSError, ValueError):
            continue
        if "MemTotal" in info and "MemFree" in info:
            total[n], free[n] = info["MemTotal"], info["MemFree"]
            m = marks.get(n)
            page = page_size_of(info["MemTotal"], m.managed) if m else PAGE_SIZE
            available[n] = available_bytes(info, m, page) or 0
    return NodeMemory(free=free, available=available, total=total)


def node_counters(fs: HostFS, node: int) -> dict[str, int]:
    """nodeN/vmstat (pgpromote_success, pgdemote_*, ...); empty when the node is gone or the file malformed."""
    try:
        return parse_keyvals(fs.read(NODE.format(node) + "/vmstat"))
    except (HostFSError, ValueError):
        return {}


def node_ranges(fs: HostFS, node: int) -> list[tuple[int, int]]:
    """Physical [start, end) ranges of a node's online memory blocks, merged, in ascending address order."""
    bs = fs.read_int("/sys/devices/system/memory/block_size_bytes", 16)
    base = NODE.format(node)
    blocks = sorted(
        int(e[6:])
        for e in fs.listdir(base)
        if e.startswith("memory") and e[6:].isdigit() and fs.read_optional(f"{base}/{e}/state") in (None, "online")
    )
    out: list[tuple[int, int]] = []
    for b in blocks:
        start, end = b * bs, (b + 1) * bs
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
