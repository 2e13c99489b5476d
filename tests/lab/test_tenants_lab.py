"""Tenants on the real kernel: a guaranteed tenant keeps its hot set on DDR next to a tenant hogging the fast tier.

The fast tier is DDR node 1 alone (`tiers: {fast: [1], slow: [2]}`: node 2 is plain RAM, fast to migrate to and
from, unlike the emulated CXL node). An unmanaged filler process takes node 1 down to ROOM_MIB of room below its
max_used mark, room as the daemon counts it (MemFree less the zones' reserve: on the lab's node 1 the high watermark
alone is 55 MiB on 6.12, so a filler sized from MemFree left the daemon no room). Two cgroups below the test cgroup:
`hog` (batch) with a 128 MiB buffer kept hot, started first, so it fills the room (which drifts by tens of MiB after
the filler is sized: page cache comes and goes; the hog is bigger than any drift seen); then `lat` (latency, fast_min
32 MiB) with a 24 MiB hot set. lat's interpreter and libraries also sit on node 1, cold and partly unmovable (shared):
the guarantee covers hot memory only, so they do not use it up. Both buffers start on node 2. The daemon (move_pages engine) must bring lat's hot set onto node 1 by displacing the hog, and keep it
there: checked through move_pages(2) queries, /proc/PID/numa_maps and the lat cgroup's memory.numa_stat, and in the
daemon's own tenants table (status) and metrics.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import CGROUP_ROOT, DaemonFactory, LabDaemon, Workload, remove_cgroup

from cxltierd.discovery.live import node_memory
from cxltierd.hostfs import HostFS

FAST, SLOW = 1, 2
ROOM_MIB = 48  # room on node 1 below max_used (90%) once the filler sits there
HOG_MIB, LAT_MIB, LAT_HOT_MIB, GUARANTEE_MIB = 128, 32, 24, 32
HOLD_TICKS = 10
MiB = 1 << 20


def numa_maps(pid: int, addr: int) -> dict[int, int]:
    """{node: pages} of the VMA starting at `addr`, from /proc/PID/numa_maps."""
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        fields = line.split()
        if int(fields[0], 16) == addr:
            return {
                int(f[1 : f.index("=")]): int(f[f.index("=") + 1 :]) for f in fields if re.fullmatch(r"N\d+=\d+", f)
            }
    raise AssertionError(f"no VMA at {addr:#x} in /proc/{pid}/numa_maps")


def numa_stat(cgroup: str) -> dict[str, dict[int, int]]:
    """memory.numa_stat of a cgroup: item -> {node: bytes}."""
    out = {}
    for line in (CGROUP_ROOT / cgroup.strip("/") / "memory.numa_stat").read_text().splitlines():
        item, *fields = line.split()
        out[item] = {int(f[1 : f.index("=")]): int(f[f.index("=") + 1 :]) for f in fields}
    return out


@pytest.fixture
def tenant_cgroups(test_cgroup: str) -> Iterator[tuple[str, str]]:
    """`lat` and `hog` below the test cgroup, memory controller on; emptied (SIGKILL) and removed at teardown."""
    parent = CGROUP_ROOT / test_cgroup.strip("/")
    (parent / "cgroup.subtree_control").write_text("+memory")
    children = [parent / "lat", parent / "hog"]
    for c in children:
        c.mkdir(exist_ok=True)
    yield f"{test_cgroup}/lat", f"{test_cgroup}/hog"
    for c in children:
        remove_cgroup(c)


def policy(test_cgroup: str, lat: str, hog: str) -> dict[str, Any]:
    return {
        "engine": "move_pages",
        "interval": "1s",
        "cooldown": "10s",
        "tiers": {"fast": [FAST], "slow": [SLOW]},
        "processes": {"manage": [{"cgroup": test_cgroup}], "min_rss": "1MiB"},
        "tenants": [
            {"name": "lat", "match": {"cgroup": lat}, "fast_min": f"{GUARANTEE_MIB}MiB", "class": "latency"},
            {"name": "hog", "match": {"cgroup": hog}, "class": "batch"},
        ],
    }


def on(w: Workload, pages_on_nodes: Callable[[int, int, int], dict[int, int]], length: int, node: int) -> int:
    return pages_on_nodes(w.pid, w.addr, length).get(node, 0)


def settled(d: LabDaemon, count: Callable[[], int], ticks: int = 3, timeout: float = 90.0) -> int:
    """count()'s value once it stayed the same for `ticks` daemon ticks (the moves in flight are done)."""
    deadline = time.monotonic() + timeout
    last, since = count(), d.ticks()
    while d.ticks() < since + ticks:
        assert time.monotonic() < deadline, f"still changing after {timeout:g}s (last {last}):\n{d.tail()}"
        time.sleep(0.5)
        now = count()
        if now != last:
            last, since = now, d.ticks()
    return last


def metric(d: LabDaemon, name: str, **labels: str) -> float:
    for lab, v in d.metrics().get(name, []):
        if all(lab.get(k) == x for k, x in labels.items()):
            return v
    raise AssertionError(f"no {name}{labels} in /metrics")


def room_on(node: int, total: int) -> int:
    """MiB of room on `node` below a 90% max_used mark, as the test sizes it: the smaller of free and available."""
    mem = node_memory(HostFS("/"), [node])
    return (min(mem.available[node], mem.free[node]) - int(0.10 * total)) >> 20


def diagnosis(d: LabDaemon, w: Workload, pages_on_nodes: Callable[[int, int, int], dict[int, int]]) -> str:
    """What the daemon and the kernel saw when a wait failed: node memory, the tenants table, the buffer's nodes."""
    mem = node_memory(HostFS("/"), [0, FAST, SLOW])
    doc = d.status()
    return (
        "node memory now (MiB): "
        + ", ".join(
            f"{n}: free {mem.free[n] >> 20} avail {mem.available[n] >> 20} of {mem.total[n] >> 20}" for n in mem.total
        )
        + f"\nbuffer of pid {w.pid}: {pages_on_nodes(w.pid, w.addr, w.length)}"
        + f"\nstatus nodes: {doc['nodes']}\ntenants: {doc['tenants']}\nheat: {doc['heat']}"
    )


@pytest.mark.usefixtures("no_kernel_migration")
def test_guaranteed_tenant_keeps_its_hot_set_on_ddr_next_to_a_hog(
    workload: Callable[..., Workload],
    test_cgroup: str,
    tenant_cgroups: tuple[str, str],
    lab_daemon: DaemonFactory,
    pages_on_nodes: Callable[[int, int, int], dict[int, int]],
) -> None:
    lat_cg, hog_cg = tenant_cgroups
    d = lab_daemon(policy(test_cgroup, lat_cg, hog_cg))
    d.wait_ticks(1)
    Path("/proc/sys/vm/drop_caches").write_text("3")  # page cache counts as room for the daemon, not for move_pages
    # The room as the daemon counts it (its own function): MemFree less the zones' reserve (high watermark + lowmem
    # protection, as MemAvailable), plus some page cache. Never more than the free pages: move_pages(2) onto a node
    # gets ENOMEM before page cache there is reclaimed (seen on 7.3 while the daemon counted page cache as room).
    mem = node_memory(HostFS("/"), [FAST])
    avail, total = min(mem.available[FAST], mem.free[FAST]), mem.total[FAST]
    filler_mib = int((avail - 0.10 * total) / MiB) - ROOM_MIB
    assert filler_mib > 0, (mem, total)
    filler = workload(FAST, filler_mib)  # unmanaged (outside the test cgroup), cold
    d.wait_ticks(2)
    room_mib = room_on(FAST, total)
    if room_mib < ROOM_MIB // 2:  # the room drifted down (page cache, the kernel): once, a filler that leaves more
        filler.proc.kill()
        filler.proc.wait()
        filler_mib -= ROOM_MIB - room_mib
        workload(FAST, filler_mib)
        d.wait_ticks(2)
        room_mib = room_on(FAST, total)
    hog = workload(SLOW, HOG_MIB, HOG_MIB, sleep_ms=1.0, cpu=0, cgroup=hog_cg, companion=True)
    # the hog fills the room first (16 MiB of its buffer on node 1 at least: the room drifts by tens of MiB)
    try:
        d.wait_for(lambda: on(hog, pages_on_nodes, hog.length, FAST) * hog.page_size >= 16 * MiB, 150, "hog")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diagnosis(d, hog, pages_on_nodes)}") from None
    hog_before = settled(d, lambda: on(hog, pages_on_nodes, hog.length, FAST)) * hog.page_size
    lat = workload(SLOW, LAT_MIB, LAT_HOT_MIB, sleep_ms=2.0, cpu=1, cgroup=lat_cg, companion=True)
    hot_pages = lat.hot_length // lat.page_size
    launched = time.monotonic()
    d.wait_for(lambda: on(lat, pages_on_nodes, lat.hot_length, FAST) >= 0.9 * hot_pages, 180, "lat's hot set on DDR")
    seconds = time.monotonic() - launched
    start = d.ticks()
    worst = 1.0
    while d.ticks() < start + HOLD_TICKS:
        worst = min(worst, on(lat, pages_on_nodes, lat.hot_length, FAST) / hot_pages)
        time.sleep(0.5)
    hog_after = on(hog, pages_on_nodes, hog.length, FAST) * hog.page_size
    print(
        f"tenants: node {FAST} MemFree - available {(mem.free[FAST] - mem.available[FAST]) >> 20} MiB, filler "
        f"{filler_mib} MiB, room then {room_mib} MiB; lat's hot set 90% on DDR {seconds:.1f}s after it started; lowest share over {HOLD_TICKS} "
        f"ticks {100 * worst:.1f}%; hog on DDR {hog_before >> 20} MiB before, {hog_after >> 20} MiB after"
    )
    assert worst >= 0.9, f"lat's hot set fell to {100 * worst:.1f}% on DDR:\n{d.tail()}"
    assert hog_after < hog_before, "the guarantee was met without displacing the hog: the room was not contested"
    # the kernel's own views agree: numa_maps of the buffer, memory.numa_stat of the cgroup
    maps = numa_maps(lat.pid, lat.addr)
    assert maps.get(FAST, 0) >= 0.9 * hot_pages, maps
    stat = numa_stat(lat_cg)
    assert stat["anon"].get(FAST, 0) >= 0.9 * LAT_HOT_MIB * MiB, stat["anon"]
    # and the daemon's tenants table and metrics
    rows = {r["tenant"]: r for r in d.status()["tenants"]}
    assert set(rows) == {"lat", "hog", "other"}
    assert rows["lat"]["guarantee_bytes"] == GUARANTEE_MIB * MiB and rows["lat"]["class"] == "latency"
    assert rows["lat"]["fast_bytes"] >= 0.9 * LAT_HOT_MIB * MiB
    assert int(rows["lat"]["node_bytes"][str(FAST)]) >= 0.9 * LAT_HOT_MIB * MiB  # numa_stat, read by the daemon
    assert rows["hog"]["moves"] > 0
    assert metric(d, "cxltierd_tenant_fast_guarantee_bytes", tenant="lat") == GUARANTEE_MIB * MiB
    assert metric(d, "cxltierd_tenant_node_memory_bytes", tenant="lat", node=str(FAST)) >= 0.9 * LAT_HOT_MIB * MiB
    assert d.stop() == 0, d.tail()
