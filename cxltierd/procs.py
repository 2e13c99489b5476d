"""Processes and per-node memory of the live host, read through HostFS (so fixture trees work too)."""

from __future__ import annotations

from dataclasses import dataclass

from cxltierd.discovery.parse import parse_meminfo
from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    name: str
    cmdline: str
    cgroup: str
    rss: int  # bytes


def parse_status(text: str) -> tuple[str, int | None]:
    """Name and VmRSS (bytes; None for kernel threads) from /proc/PID/status."""
    name, rss = "", None
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
        elif line.startswith("VmRSS:"):
            parts = line.split()
            rss = int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
    return name, rss


def parse_cgroup(text: str) -> str:
    """The cgroup v2 path ("0::/system.slice/x.service"); "/" when there is none."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return "/"


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


def node_memory(fs: HostFS, nodes: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """(free, total) bytes per node from nodeN/meminfo; a node whose file is gone is left out (unplugged)."""
    free, total = {}, {}
    for n in nodes:
        try:
            info = parse_meminfo(fs.read(f"/sys/devices/system/node/node{n}/meminfo"))
        except (HostFSError, ValueError):
            continue
        if "MemTotal" in info and "MemFree" in info:
            total[n], free[n] = info["MemTotal"], info["MemFree"]
    return free, total
