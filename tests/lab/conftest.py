"""Lab tests: they run only inside the QEMU lab guest (`bash tests/lab/run.sh tests/lab`), where CXLTIERD_LAB=1.

On any other host every test under tests/lab/ is marked `lab` and skipped. Fixtures and helpers for lab tests:
  cxl_node        the NUMA node fed by the CXL region (from /sys/bus/dax/devices/dax*/target_node)
  workload        factory: workload(node, mib, hot_mib=0, ...) starts tests/lab/workload.py, SIGKILLed at teardown
  pages_on_nodes  pages_on_nodes(pid, addr, length) -> {node: pages} through move_pages(2) with nodes=NULL
  move_pages      move_pages(pid, addr, length, node) -> {node: pages}: batched migration of a range
  vmstat          vmstat() -> {counter: value} from /proc/vmstat
  knob            knob(path, value): write a sysfs/procfs/debugfs value, restored at teardown
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parent
IN_LAB = os.environ.get("CXLTIERD_LAB") == "1"
SKIP_REASON = "needs the QEMU lab guest: run bash tests/lab/run.sh"

SYS_MOVE_PAGES = 279
MPOL_MF_MOVE = 2
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
BATCH = 65536


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if LAB_DIR not in item.path.resolve().parents:
            continue
        item.add_marker(pytest.mark.lab)
        if not IN_LAB:
            item.add_marker(skip)


# ---- helpers (plain functions; the fixtures below hand them to tests) ------------------------------------------------


def _move_pages(pid: int, addr: int, length: int, node: int | None) -> dict[int, int]:
    """move_pages(2) over every page of [addr, addr + length), in batches of BATCH pages.

    node None only queries placement. Returns {node or negative errno: pages} from the per-page status array.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    first = addr - addr % PAGE_SIZE
    total = (addr + length - first + PAGE_SIZE - 1) // PAGE_SIZE
    counts: Counter[int] = Counter()
    for start in range(0, total, BATCH):
        n = min(BATCH, total - start)
        pages = (ctypes.c_void_p * n)(*(first + (start + i) * PAGE_SIZE for i in range(n)))
        status = (ctypes.c_int * n)()
        nodes = None if node is None else (ctypes.c_int * n)(*([node] * n))
        flags = 0 if node is None else MPOL_MF_MOVE
        rc = libc.syscall(
            ctypes.c_long(SYS_MOVE_PAGES),
            ctypes.c_long(pid),
            ctypes.c_ulong(n),
            pages,
            nodes,
            status,
            ctypes.c_long(flags),
        )
        if rc < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"move_pages(pid={pid}, {n} pages, node={node}): {os.strerror(err)}")
        counts.update(status)
    return dict(counts)


def pages_on_nodes(pid: int, addr: int, length: int) -> dict[int, int]:
    """Where the pages of [addr, addr + length) of `pid` are: {node: pages}; negative keys are errnos (-2 = absent)."""
    return _move_pages(pid, addr, length, None)


def move_pages(pid: int, addr: int, length: int, node: int) -> dict[int, int]:
    """Move every page of [addr, addr + length) of `pid` to `node` with batched move_pages(2) calls.

    Returns the per-page status counts after the call: {node: pages} (negative keys are errnos).
    """
    return _move_pages(pid, addr, length, node)


def vmstat() -> dict[str, int]:
    """/proc/vmstat as {counter: value}."""
    out: dict[str, int] = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def dax_target_nodes() -> dict[str, int]:
    """{daxX.Y: target_node} for dax devices below a CXL region that are onlined as a memory node."""
    found: dict[str, int] = {}
    for dev in sorted(Path("/sys/bus/dax/devices").glob("dax*")):
        real = dev.resolve()
        if "/region" not in str(real) or not (dev / "target_node").exists():
            continue
        node = int((dev / "target_node").read_text())
        if node >= 0 and Path(f"/sys/devices/system/node/node{node}").is_dir():
            found[dev.name] = node
    return found


# ---- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cxl_node() -> int:
    """The NUMA node that the lab's CXL region was onlined as (node 4 with the runner's topology)."""
    nodes = dax_target_nodes()
    assert nodes, "no dax device below a CXL region with an online target node: the lab's CXL region is missing"
    return min(nodes.values())


@dataclass
class Workload:
    """A running tests/lab/workload.py: its buffer is [addr, addr + length), the first hot_length bytes are hot."""

    proc: subprocess.Popen[str]
    pid: int
    addr: int
    length: int
    page_size: int
    node: int
    hot_length: int

    @property
    def pages(self) -> int:
        return self.length // self.page_size

    def placement(self) -> dict[int, int]:
        return pages_on_nodes(self.pid, self.addr, self.length)


WorkloadFactory = Callable[..., Workload]


@pytest.fixture
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkloadFactory]:
    """Factory: workload(node, mib, hot_mib=0, *, sleep_ms=1.0, cpu=None, timeout=300.0) -> Workload.

    Starts tests/lab/workload.py with LD_BIND_NOW=1, waits until the whole buffer is touched, SIGKILLs it at teardown.
    """
    started: list[subprocess.Popen[str]] = []
    logs = tmp_path_factory.mktemp("workload")

    def start(
        node: int, mib: int, hot_mib: int = 0, *, sleep_ms: float = 1.0, cpu: int | None = None, timeout: float = 300.0
    ) -> Workload:
        cmd = [sys.executable, str(LAB_DIR / "workload.py"), "--node", str(node), "--mib", str(mib)]
        cmd += ["--hot-mib", str(hot_mib), "--sleep-ms", str(sleep_ms)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        err_path = logs / f"workload-{len(started)}.stderr"
        with err_path.open("w") as err:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "LD_BIND_NOW": "1"}
            )
        started.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"workload {cmd[2:]} did not start within {timeout}s: {err_path.read_text().strip()}")
        info = json.loads(line)
        return Workload(proc=proc, **info)

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(name="pages_on_nodes")
def pages_on_nodes_fixture() -> Callable[[int, int, int], dict[int, int]]:
    return pages_on_nodes


@pytest.fixture(name="move_pages")
def move_pages_fixture() -> Callable[[int, int, int, int], dict[int, int]]:
    return move_pages


@pytest.fixture(name="vmstat")
def vmstat_fixture() -> Callable[[], dict[str, int]]:
    return vmstat


@pytest.fixture
def knob() -> Iterator[Callable[[str, str], None]]:
    """knob(path, value): write a kernel tunable; every changed path gets its first old value back at teardown."""
    saved: dict[str, str] = {}

    def set_knob(path: str, value: str) -> None:
        if path not in saved:
            saved[path] = Path(path).read_text().strip()
        Path(path).write_text(value)

    yield set_knob
    for path, old in reversed(list(saved.items())):
        Path(path).write_text(old)
