"""Weighted interleave on the lab's real kernel: the daemon sets /sys/kernel/mm/mempolicy/weighted_interleave/nodeN
from the nodes' HMAT/CDAT read bandwidth, leaves the kernel's auto mode (7.3) alone unless told to override it, a
MPOL_WEIGHTED_INTERLEAVE buffer then splits its pages across the nodes in proportion (/proc/PID/numa_maps), and the
weights (and auto mode) are back as they were after the daemon stops."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import DaemonFactory, access_figures, read

from cxltierd.policy.interleave import bandwidth_weights

WI = Path("/sys/kernel/mm/mempolicy/weighted_interleave")
NODES = (0, 2)  # DDR and the slow plain-RAM node (the CXL node's figures decide only its own weight, checked below)
MANAGE_NOTHING = {"processes": {"manage": [{"name": "no-such-process-cxltierd"}]}}
# One buffer with MPOL_WEIGHTED_INTERLEAVE over NODES (mbind(2), mode 6), THP off, every page touched.
INTERLEAVED = """import ctypes, json, mmap, os, sys, time
nodes = [int(x) for x in sys.argv[1].split(",")]
pages = int(sys.argv[2])
page = os.sysconf("SC_PAGE_SIZE")
buf = mmap.mmap(-1, pages * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(pages * page), 15)  # MADV_NOHUGEPAGE
mask = ctypes.c_ulong(sum(1 << n for n in nodes))
rc = libc.syscall(237, ctypes.c_void_p(addr), ctypes.c_ulong(pages * page), 6, ctypes.byref(mask), 65, 0)
if rc != 0:
    print(json.dumps({"error": os.strerror(ctypes.get_errno())}), flush=True)
    sys.exit(1)
memoryview(buf)[0 : pages * page : page] = b"\\x01" * pages
print(json.dumps({"pid": os.getpid(), "addr": addr}), flush=True)
time.sleep(3600)
"""


def weights() -> dict[int, int]:
    return {int(p.name[4:]): int(read(p)) for p in WI.glob("node[0-9]*")}


def auto() -> str | None:
    return read(WI / "auto") if (WI / "auto").exists() else None


@pytest.fixture
def saved_weights() -> Iterator[tuple[dict[int, int], str | None]]:
    """The weights and auto mode before the test; put back at teardown whatever the daemon did."""
    if not WI.is_dir():
        pytest.fail(f"{WI} missing: both lab kernels (6.12, 7.3) have weighted interleave")
    before, mode = weights(), auto()
    yield before, mode
    if mode is not None and mode.lower() in ("y", "1", "true"):
        (WI / "auto").write_text("true")
    else:
        for n, w in before.items():
            if weights().get(n) != w:
                (WI / f"node{n}").write_text(str(w))


def expected(cxl_node: int) -> dict[int, int]:
    """Weights from the read bandwidth the kernel reports (a node's HMAT entries, else region0's for the CXL node),
    found independently of cxltierd's discovery, reduced the way cxltierd reduces them."""
    bw = {}
    for n in weights():
        figures = access_figures(n, "region0" if n == cxl_node else None)
        if figures is not None:
            bw[n] = figures[1]["read_bandwidth"]
    return bandwidth_weights(bw)


def numa_maps_split(pid: int, addr: int) -> dict[int, int]:
    """{node: pages} of the mapping starting at addr, from /proc/PID/numa_maps."""
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        if line.startswith(f"{addr:x} "):
            assert "weighted interleave" in line, line
            return {int(n): int(c) for n, c in re.findall(r"\bN(\d+)=(\d+)", line)}
    raise AssertionError(f"no mapping at {addr:x} in /proc/{pid}/numa_maps")


def test_weights_from_bandwidth_split_pages_and_are_restored(
    lab_daemon: DaemonFactory, cxl_node: int, saved_weights: tuple[dict[int, int], str | None]
) -> None:
    before, mode = saved_weights
    want = expected(cxl_node)
    assert {0, 2, cxl_node} <= set(want), want
    kernel_auto = mode is not None and mode.lower() in ("y", "1", "true")

    # Without override: the kernel's auto mode (7.3) is left alone; the 6.12 defaults (all 1) are replaced.
    d = lab_daemon({**MANAGE_NOTHING, "interleave": {"weights": "bandwidth"}})
    if kernel_auto:
        d.wait_log(r"weighted interleave: the kernel's auto mode sets the weights")
        assert weights() == before and auto() == mode
        d.wait_ticks(1)  # up and handling signals (the weights are set while it is still being built)
        assert d.stop() == 0
        d = lab_daemon({**MANAGE_NOTHING, "interleave": {"weights": "bandwidth", "override": True}})
    else:
        assert set(before.values()) == {1}, before
    d.wait_log(r"weighted interleave: weights set from HMAT bandwidth")
    d.wait_ticks(1)
    now = weights()
    assert {n: now[n] for n in want} == want, (now, want)
    if kernel_auto:
        assert auto() is not None and auto().lower() in ("n", "0", "false")  # type: ignore[union-attr]

    # A weighted-interleave allocation over nodes 0 and 2 splits in the weights' proportion.
    total = want[0] + want[2]
    pages = total * (4096 // total)
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERLEAVED, ",".join(map(str, NODES)), str(pages)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert "error" not in info, info
        split = numa_maps_split(info["pid"], info["addr"])
    finally:
        proc.kill()
        proc.wait()
    print(f"kernel weights {now}, bandwidth weights {want}, split of {pages} pages over {NODES}: {split}")
    assert sum(split.values()) == pages, split
    for n in NODES:
        share = split.get(n, 0) / pages
        assert abs(share - want[n] / total) < 0.02, (n, share, want, split)

    # Stopping gives the weights (and the kernel's auto mode) back.
    assert d.stop() == 0
    d.wait_log(r"weighted interleave weights restored", timeout=5)
    assert auto() == mode
    assert weights() == before  # 7.3: auto mode on again recomputes the kernel's own weights
