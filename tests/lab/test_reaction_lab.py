"""Reaction on the real kernel: once a workload's hot set is on DDR, its hot range moves to fresh pages on the CXL node
(the old range goes cold), and the daemon must follow.

The workload (tests/lab/workload.py) keeps the first 16 MiB of a 64 MiB buffer on the CXL node hot; once 90% of it
sits on DDR, SIGUSR1 moves the hot range 32 MiB on, onto pages that were cold on the CXL node until then. Verdicts
come from the kernel's page placement (move_pages(2) queries):
- >= 90% of the new hot range on DDR within SHIFT_TICKS ticks of the shift (generous for TCG: the daemon's ticks are
  1 s apart but its work under TCG stretches them; a daemon that never reacts fails after SHIFT_TIMEOUT seconds);
- the old hot range stays on DDR (a cold region is demoted only under fast-tier pressure, and 1 GiB DDR nodes have
  none here);
- no 2 MiB chunk of the never-hot part moved, except within EDGE_MIB of a hot range (DAMON's precision at an edge).
The numa_balancing engine too: its promotions are the kernel's own hint-fault decisions, so it is the scan knobs
the engine derives from the policy (scan_period_max_ms 31, scan_size_mb 64 for interval 1 s) that make the kernel
arm the new range soon after the shift; the test checks they are set while the daemon runs and restored after
(hot_threshold 0.25/s: under TCG a pass of the workload over 4096 faulting pages takes longer than 1 s).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from labkit import DaemonFactory, LabDaemon, Workload, read

MIB, HOT_MIB, SHIFT_MIB = 64, 16, 32
DDR = (0, 1)
EDGE_MIB = 4
SHIFT_TICKS = 15  # ticks from the shift until 90% of the new hot range is on DDR
FIRST_TIMEOUT = 150.0  # seconds from launch until the first hot range is on DDR (start-up under TCG included)
SHIFT_TIMEOUT = 90.0  # seconds from the shift before the daemon counts as never reacting
SCHED_NB = "/sys/kernel/debug/sched/numa_balancing"
SCAN_KNOBS = ("hot_threshold_ms", "scan_delay_ms", "scan_period_min_ms", "scan_period_max_ms", "scan_size_mb")


def on_ddr(w: Workload, pages_on_nodes: Callable[[int, int, int], dict[int, int]], start_mib: int, mib: int) -> float:
    """Share of the pages of [start_mib, start_mib + mib) MiB of the buffer that sit on DDR."""
    counts = pages_on_nodes(w.pid, w.addr + (start_mib << 20), mib << 20)
    return sum(v for n, v in counts.items() if n in DDR) / ((mib << 20) // w.page_size)


def wait_on_ddr(
    d: LabDaemon,
    w: Workload,
    pages_on_nodes: Callable[[int, int, int], dict[int, int]],
    start_mib: int,
    timeout: float,
) -> int:
    """Poll until >= 90% of the hot range at start_mib is on DDR; the daemon's tick count then."""
    deadline = time.monotonic() + timeout
    while True:
        share = on_ddr(w, pages_on_nodes, start_mib, HOT_MIB)
        if share >= 0.9:
            return d.ticks()
        assert w.proc.poll() is None, "the workload died"
        d.alive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"hot range at {start_mib} MiB: {100 * share:.0f}% on DDR after {timeout:g}s (need 90%):\n{d.tail()}"
            )
        time.sleep(0.25)


def moved_cold_chunks(w: Workload, pages_on_nodes: Callable[[int, int, int], dict[int, int]]) -> list[int]:
    """Offsets (MiB) of the never-hot 2 MiB chunks farther than EDGE_MIB from both hot ranges with pages on DDR."""
    hot = [(0, HOT_MIB), (SHIFT_MIB, SHIFT_MIB + HOT_MIB)]
    out = []
    for off in range(0, MIB, 2):
        if any(lo - EDGE_MIB < off + 2 and off < hi + EDGE_MIB for lo, hi in hot):
            continue
        if on_ddr(w, pages_on_nodes, off, 2) > 0:
            out.append(off)
    return out


@pytest.mark.parametrize("engine", ["move_pages", "damos", "numa_balancing"])
@pytest.mark.usefixtures("no_kernel_migration")
def test_the_daemon_follows_a_hot_set_that_moves(
    engine: str,
    cxl_node: int,
    workload: Callable[..., Workload],
    test_cgroup: str,
    lab_daemon: DaemonFactory,
    pages_on_nodes: Callable[[int, int, int], dict[int, int]],
) -> None:
    """The hot range moves to fresh CXL pages: the new one reaches DDR within SHIFT_TICKS ticks, the old one stays."""
    nb = engine == "numa_balancing"  # NUMA balancing never scans a VMA with a strict bind: drop it once on node 4
    w = workload(cxl_node, MIB, HOT_MIB, cgroup=test_cgroup, cpu=1, companion=True, shift_mib=SHIFT_MIB, unbind=nb)
    assert w.placement() == {cxl_node: w.pages}
    policy: dict[str, Any] = {
        "engine": engine,
        "interval": "1s",
        "processes": {"manage": [{"cgroup": test_cgroup}], "min_rss": "1MiB"},
    }
    knobs = {k: read(f"{SCHED_NB}/{k}") for k in SCAN_KNOBS} if nb else {}
    if nb:
        policy["hotness"] = {"hot_threshold": 0.25}
    d = lab_daemon(policy)
    wait_on_ddr(d, w, pages_on_nodes, 0, FIRST_TIMEOUT)
    if knobs:
        set_now = [read(f"{SCHED_NB}/{k}") for k in SCAN_KNOBS]
        assert set_now == ["4000", "1000", "25", "31", "64"], f"the engine's debugfs knobs: {set_now}"
    assert on_ddr(w, pages_on_nodes, SHIFT_MIB, HOT_MIB) < 0.1, "the next hot range moved before it was hot"
    shifted_at, ticks0 = time.monotonic(), d.ticks()
    os.kill(w.pid, signal.SIGUSR1)
    ticks = wait_on_ddr(d, w, pages_on_nodes, SHIFT_MIB, SHIFT_TIMEOUT) - ticks0
    seconds = time.monotonic() - shifted_at
    print(f"{engine}: 90% of the new hot range on DDR {seconds:.1f}s / {ticks} ticks after the shift")
    assert ticks <= SHIFT_TICKS, f"{engine}: {ticks} ticks to follow the shift (bound {SHIFT_TICKS}):\n{d.tail()}"
    old = on_ddr(w, pages_on_nodes, 0, HOT_MIB)
    assert old >= 0.9, f"the old hot range was demoted without fast-tier pressure: {100 * old:.0f}% left on DDR"
    assert moved_cold_chunks(w, pages_on_nodes) == [], "never-hot memory away from the hot edges moved to DDR"
    if knobs:
        assert d.stop() == 0, d.tail()
        assert {k: read(f"{SCHED_NB}/{k}") for k in SCAN_KNOBS} == knobs, "debugfs knobs not restored"
