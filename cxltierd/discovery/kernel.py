"""Kernel version, tiering knobs, DAMON, /proc/vmstat counters and NVIDIA GPU memory nodes."""

from __future__ import annotations

from cxltierd.discovery.parse import (
    TIERING_COUNTERS,
    parse_bool,
    parse_kernel_release,
    parse_keyvals,
    parse_nvidia_numa_status,
)
from cxltierd.discovery.reader import Reader
from cxltierd.errors import HostFSError
from cxltierd.facts import Damon, GpuNode
from cxltierd.hostfs import HostFS

DAMON_ADMIN = "/sys/kernel/mm/damon/admin"
DAMON_STAT = "/sys/module/damon_stat/parameters/enabled"


def read_vmstat(fs: HostFS) -> dict[str, int]:
    """Tiering counters from /proc/vmstat (empty when unreadable). Cheap: the daemon calls it every tick."""
    try:
        values = parse_keyvals(fs.read("/proc/vmstat"))
    except (HostFSError, ValueError):
        return {}
    return {k: values[k] for k in TIERING_COUNTERS if k in values}


def read_release(r: Reader) -> tuple[str | None, tuple[int, int] | None]:
    """The kernel release string and its (major, minor), from /proc/version (None, None when unreadable)."""
    parsed = r.parse("/proc/version", parse_kernel_release, required=False)
    return parsed if parsed else (None, None)


def read_damon(r: Reader) -> Damon:
    """DAMON's sysfs interface: present, its kdamonds and which are on, and the kernel's DAMON_STAT switch."""
    if not r.fs.is_dir(DAMON_ADMIN):
        return Damon()
    nr = r.int(f"{DAMON_ADMIN}/kdamonds/nr_kdamonds", required=False) or 0
    running = tuple(i for i in range(nr) if r.text(f"{DAMON_ADMIN}/kdamonds/{i}/state", required=False) == "on")
    stat = r.text(DAMON_STAT, required=False)
    return Damon(sysfs=True, nr_kdamonds=nr, running=running, stat=None if stat is None else stat in ("Y", "1"))


def read_gpus(r: Reader) -> tuple[GpuNode, ...]:
    """NVIDIA GPUs whose memory the driver onlines as a NUMA node (Grace Hopper), from /proc/driver/nvidia."""
    base = "/proc/driver/nvidia/gpus"
    out = []
    for bdf in r.fs.listdir(base):
        parsed = r.parse(f"{base}/{bdf}/numa_status", parse_nvidia_numa_status, required=False)
        if parsed:
            out.append(GpuNode(bdf=bdf, node=parsed[0], status=parsed[1]))
    return tuple(out)


def read_demotion(r: Reader) -> bool | None:
    """/sys/kernel/mm/numa/demotion_enabled, or None where the kernel has no such file."""
    return r.parse("/sys/kernel/mm/numa/demotion_enabled", parse_bool, required=False)
