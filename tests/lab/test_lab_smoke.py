"""Smoke tests in the QEMU lab guest: the kernel's own view of the emulated CXL memory, the CLI's classification of it,
and page placement and migration through move_pages(2). Skipped outside the lab (see conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from labkit import Workload, assert_agrees

CXL = Path("/sys/bus/cxl/devices")
DAX = Path("/sys/bus/dax/devices")
NODES = Path("/sys/devices/system/node")
MEMORY = Path("/sys/devices/system/memory")
CXLTIERD = Path(sys.executable).parent / "cxltierd"


def read(path: Path) -> str:
    return path.read_text().strip()


def node_mem_bytes(node: int) -> int:
    for line in read(NODES / f"node{node}/meminfo").splitlines():
        if "MemTotal:" in line:
            return int(line.split()[-2]) * 1024
    raise AssertionError(f"no MemTotal in node{node}/meminfo")


def test_cxl_memdev_mem0() -> None:
    mem = CXL / "mem0"
    assert mem.is_dir(), f"no CXL memdev: {sorted(p.name for p in CXL.iterdir())}"
    assert int(read(mem / "ram/size"), 0) == 512 << 20


def test_region0_is_committed_ram() -> None:
    region = CXL / "region0"
    assert read(region / "mode") == "ram"
    assert read(region / "commit") == "1"
    assert (region / "driver").exists(), "region0 is not bound to the cxl_region driver"
    assert int(read(region / "size"), 0) == 512 << 20


def test_dax_device_bound_to_kmem(cxl_node: int) -> None:
    dax = DAX / "dax0.0"
    assert "/region0/dax_region0/" in str(dax.resolve())
    assert (dax / "driver").resolve().name == "kmem"
    assert int(read(dax / "target_node")) == cxl_node


def test_cxl_node_is_cpuless_and_holds_the_region(cxl_node: int) -> None:
    node = NODES / f"node{cxl_node}"
    assert read(node / "cpulist") == ""
    region_size = int(read(CXL / "region0/size"), 0)
    block_size = int(read(MEMORY / "block_size_bytes"), 16)
    blocks = sorted(node.glob("memory[0-9]*"))
    assert len(blocks) * block_size == region_size
    for block in blocks:
        assert read(block / "state") == "online"
        assert read(block / "valid_zones") == "Movable"
    assert 0 < node_mem_bytes(cxl_node) <= region_size


def test_cli_topology_classifies_the_cxl_node(cxl_node: int) -> None:
    out = subprocess.run(
        [str(CXLTIERD), "topology", "--root", "/", "--json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    topo = json.loads(out.stdout)
    assert {"nodes", "tiers", "cxl", "dax", "kernel"} <= topo.keys()
    tiers = {n["node"]: n["tier"] for n in topo["nodes"]}
    assert tiers[cxl_node] == "cxl", tiers
    assert tiers[0] == "ddr" and tiers[1] == "ddr", tiers


@pytest.mark.usefixtures("no_kernel_migration")
def test_workload_lands_on_the_cxl_node_and_moves_to_node0(
    cxl_node: int,
    workload: Callable[..., Workload],
    move_pages: Callable[[int, int, int, int], dict[int, int]],
    vmstat: Callable[[], dict[str, int]],
) -> None:
    w = workload(node=cxl_node, mib=8)
    assert w.placement() == {cxl_node: w.pages}

    v0 = vmstat()
    t0 = time.monotonic()
    status = move_pages(w.pid, w.addr, w.length, 0)
    seconds = time.monotonic() - t0
    v1 = vmstat()
    delta = v1["pgmigrate_success"] - v0["pgmigrate_success"]

    assert status == {0: w.pages}
    assert w.placement() == {0: w.pages}
    # Every page moved is counted; anything more is some other migration in the guest meanwhile (one CI run: 1 page).
    assert delta >= w.pages
    assert_agrees(w.pages, delta, v0, v1)
    print(f"moved {w.pages} pages node{cxl_node}->node0 in {seconds:.2f}s ({w.pages / seconds:.0f} pages/s)")


def test_hot_workload_keeps_switching_context(workload: Callable[..., Workload]) -> None:
    """The hot loop sleeps between passes, so DAMON under TCG can see its accesses (README: traps)."""
    w = workload(node=1, mib=4, hot_mib=2, cpu=1)
    assert w.placement() == {1: w.pages}

    def switches() -> int:
        status = read(Path(f"/proc/{w.pid}/status"))
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))

    first = switches()
    time.sleep(1.0)
    assert switches() - first >= 10
    assert w.proc.poll() is None
