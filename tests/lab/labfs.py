"""Helpers shared by the lab conftest and test modules (which cannot import conftest): DAMON sysfs access and
the check of a migrated-page count against the kernel pgmigrate_success counter."""

from __future__ import annotations

import errno
import time
from pathlib import Path


def damon_io(path: Path, value: str | None = None) -> str:
    """Read (or write) a DAMON sysfs file, retrying the EBUSY it answers while someone holds DAMON's sysfs mutex."""
    for attempt in range(100):
        try:
            if value is None:
                return path.read_text().strip()
            path.write_text(value)
            return value
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == 99:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def read(path: str | Path) -> str:
    """A sysfs value, retried while DAMON answers EBUSY."""
    return damon_io(Path(path))


AGREE_PAGES = 16  # slack for pages in flight between the daemon's count and the kernel's counter

# Migrations the kernel counts in pgmigrate_success and attributes to a cause other than the daemon: NUMA-balancing
# hinting faults (numa_balancing is off during the engine tests, but PTEs an earlier scan made PROT_NONE still
# migrate when touched), demotion in reclaim, and compaction (compact_isolated: an upper bound of what it migrated).
OTHER_CAUSES = ("numa_pages_migrated", "pgdemote_kswapd", "pgdemote_direct", "pgdemote_khugepaged", "compact_isolated")


def assert_agrees(ours: int, kernel: int, v0: dict[str, int], v1: dict[str, int]) -> None:
    """The daemon's pages vs the pgmigrate_success delta; the kernel may exceed the daemon only by AGREE_PAGES plus
    what it attributes to other causes between v0 and v1 (two /proc/vmstat snapshots around the daemon's reading)."""
    others = {k: v1.get(k, 0) - v0.get(k, 0) for k in OTHER_CAUSES}
    print(f"pgmigrate_success {kernel}, daemon {ours}, other causes {others}")
    assert ours <= kernel + AGREE_PAGES, f"the daemon counts {ours} pages, the kernel migrated {kernel}"
    assert kernel - ours <= AGREE_PAGES + sum(others.values()), (
        f"kernel {kernel} vs daemon {ours}, other causes {others}"
    )


# ---- the tier-order evidence the kernel reports (read here, independently of cxltierd's discovery) --------------------

NODES = Path("/sys/devices/system/node")
ACCESS = ("read_latency", "write_latency", "read_bandwidth", "write_bandwidth")


def access_figures(node: int, region: str | None = None) -> tuple[str, dict[str, int]] | None:
    """(where, {read_latency, write_latency: ns, read_bandwidth, write_bandwidth: MB/s}) for a CPU initiator: the
    node's own HMAT entries (access1, else access0), else those of the CXL region feeding it; None without any."""
    places = [NODES / f"node{node}/access1/initiators", NODES / f"node{node}/access0/initiators"]
    if region:
        places += [Path(f"/sys/bus/cxl/devices/{region}/access1"), Path(f"/sys/bus/cxl/devices/{region}/access0")]
    for d in places:
        if all((d / f).exists() for f in ACCESS):
            return str(d), {f: int(read(d / f)) for f in ACCESS}
    return None


def cost(figures: dict[str, int]) -> float:
    """(read + write latency) / (read + write bandwidth): lower is faster (what the kernel's memory tiers rank by)."""
    return (figures["read_latency"] + figures["write_latency"]) / (
        figures["read_bandwidth"] + figures["write_bandwidth"]
    )


def kernel_tiers() -> dict[int, int]:
    """node -> N of the kernel's memory_tierN (lower is faster)."""
    out: dict[int, int] = {}
    for t in Path("/sys/devices/virtual/memory_tiering").glob("memory_tier[0-9]*"):
        for part in read(t / "nodelist").split(","):
            lo, _, hi = part.partition("-")
            if lo:
                out |= {n: int(t.name[11:]) for n in range(int(lo), int(hi or lo) + 1)}
    return out
