"""Lab tests: they run only inside the QEMU lab guest (`bash tests/lab/run.sh tests/lab`), where CXLTIERD_LAB=1.

On any other host every test under tests/lab/ is marked `lab` and skipped. This file holds only that hook and the
fixtures; the helpers they hand out (and that lab tests and benchmarks import) live in labkit.py. Fixtures:
  cxl_node        the NUMA node fed by the CXL region (from /sys/bus/dax/devices/dax*/target_node)
  workload        factory: workload(node, mib, hot_mib=0, ...) starts tests/lab/workload.py, SIGKILLed at teardown
  pages_on_nodes  pages_on_nodes(pid, addr, length) -> {node: pages} through move_pages(2) with nodes=NULL
  move_pages      move_pages(pid, addr, length, node) -> {node: pages}: batched migration of a range
  vmstat          vmstat() -> {counter: value} from /proc/vmstat
  knob            knob(path, value): write a sysfs/procfs/debugfs value, restored at teardown
  test_cgroup     a memory-controlled cgroup v2 group (/cxltierd-test) for workloads; removed at teardown
  lab_daemon      factory: lab_daemon(policy) starts `cxltierd run --backend host` (LabDaemon); stopped at teardown,
                  which also puts DAMON and the NUMA-balancing knobs back as they were
  cxl_hotplug     CxlHotplug: unplug() / replug() the CXL node (offline its blocks + unbind dax from kmem, and back);
                  the node is always replugged at teardown
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import (
    CGROUP_ROOT,
    COMPANION,
    IN_LAB,
    LAB_DIR,
    NB_KNOBS,
    TEST_CGROUP,
    CxlHotplug,
    DaemonFactory,
    LabDaemon,
    Workload,
    WorkloadFactory,
    dax_target_nodes,
    loopback_up,
    move_pages,
    pages_on_nodes,
    remove_cgroup,
    remove_kdamonds,
    vmstat,
)

SKIP_REASON = "needs the QEMU lab guest: run bash tests/lab/run.sh"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if LAB_DIR not in item.path.resolve().parents:
            continue
        item.add_marker(pytest.mark.lab)
        if not IN_LAB:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cxl_node() -> int:
    """The NUMA node that the lab's CXL region was onlined as (node 4 with the runner's topology)."""
    nodes = dax_target_nodes()
    assert nodes, "no dax device below a CXL region with an online target node: the lab's CXL region is missing"
    return min(nodes.values())


@pytest.fixture
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkloadFactory]:
    """Factory: workload(node, mib, hot_mib=0, *, sleep_ms=1.0, cpu=None, cgroup=None, unbind=False, shift_mib=0,
    warm_mib=0, warm_every=4) -> Workload.

    Starts tests/lab/workload.py with LD_BIND_NOW=1, waits until the whole buffer is touched, SIGKILLs it at teardown.
    cgroup: join that cgroup (a path below /sys/fs/cgroup, see the `test_cgroup` fixture) before allocating; unbind:
    drop the buffer's MPOL_BIND after touching it, so NUMA balancing may move it. companion (needs cpu): also start a
    process that wakes every 0.5 ms on the same CPU (in the caller's cgroup, so a cgroup selector leaves it out).
    shift_mib: each SIGUSR1 to the workload moves its hot range that many MiB on (tests/lab/workload.py).
    warm_mib: the range after the hot one that is touched on every warm_every-th pass only (Workload.warm_length).

    Why the companion: x86 clears a PTE's accessed bit without a TLB flush (DAMON's mkold, the DAMOS young filter),
    and QEMU's TCG keeps the translation cached until the guest switches address space. A workload that only
    sleeps switches to the idle task, which keeps its mm: the accessed bit is never set again and DAMON sees a hot
    buffer as idle (measured in this lab: nr_accesses 0 on every region of a buffer re-touched every few ms). A
    second process on that CPU forces a CR3 switch, hence a TLB flush, at every wake-up.
    """
    started: list[subprocess.Popen[str]] = []
    logs = tmp_path_factory.mktemp("workload")

    def start(
        node: int,
        mib: int,
        hot_mib: int = 0,
        *,
        sleep_ms: float = 1.0,
        cpu: int | None = None,
        cgroup: str | None = None,
        unbind: bool = False,
        companion: bool = False,
        timeout: float = 300.0,
        shift_mib: int = 0,
        warm_mib: int = 0,
        warm_every: int = 4,
    ) -> Workload:
        if companion:
            assert cpu is not None, "a companion shares the workload's CPU: give cpu="
            started.append(subprocess.Popen([sys.executable, "-c", COMPANION.format(cpu=cpu)], text=True))
        cmd = [sys.executable, str(LAB_DIR / "workload.py"), "--node", str(node), "--mib", str(mib)]
        cmd += ["--hot-mib", str(hot_mib), "--sleep-ms", str(sleep_ms)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        if cgroup is not None:
            cmd += ["--cgroup", cgroup]
        if unbind:
            cmd += ["--unbind"]
        if shift_mib:
            cmd += ["--shift-mib", str(shift_mib)]
        if warm_mib:
            cmd += ["--warm-mib", str(warm_mib), "--warm-every", str(warm_every)]
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


@pytest.fixture
def no_kernel_migration(knob: Callable[[str, str], None]) -> None:
    """NUMA balancing and proactive compaction off for the test (restored at teardown): neither migrates pages behind
    the placement under test, nor adds to pgmigrate_success."""
    knob("/proc/sys/kernel/numa_balancing", "0")
    knob("/proc/sys/vm/compaction_proactiveness", "0")


@pytest.fixture
def test_cgroup() -> Iterator[str]:
    """The cgroup v2 group /cxltierd-test with the memory controller on (its path, relative to /sys/fs/cgroup).

    The root's subtree_control gets +memory first (a child has no memory.* files, and a DAMOS memcg filter no memcg
    to match, without it). At teardown every process left in the group is SIGKILLed and the group removed.
    """
    (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory")
    group = CGROUP_ROOT / TEST_CGROUP.strip("/")
    group.mkdir(exist_ok=True)
    yield TEST_CGROUP
    remove_cgroup(group)


@pytest.fixture
def lab_daemon(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonFactory]:
    """Factory: lab_daemon(policy, state_dir=None) -> LabDaemon (started). Teardown: SIGTERM (SIGKILL after 60 s),
    log copied to the share, then DAMON emptied and numa_balancing / demotion_enabled / the promote rate limit /
    DAMON_STAT (where the kernel has it) put back to what they were before the test, whatever the daemon did."""
    loopback_up()
    saved = {p: Path(p).read_text().strip() for p in NB_KNOBS if Path(p).exists()}
    started: list[LabDaemon] = []
    base = tmp_path_factory.mktemp("daemon")

    def start(policy: dict[str, Any] | str, state_dir: Path | None = None) -> LabDaemon:
        d = LabDaemon(base / f"d{len(started)}", policy, state_dir)
        started.append(d)
        return d

    yield start
    for i, d in enumerate(started):
        with contextlib.suppress(AssertionError):
            d.stop(timeout=60)
        d.keep_log(f"{request.node.name}-{i}")
    remove_kdamonds()
    for path, value in saved.items():
        if Path(path).read_text().strip() != value:
            Path(path).write_text(value)


@pytest.fixture
def cxl_hotplug(cxl_node: int) -> Iterator[CxlHotplug]:
    dax = next(name for name, node in dax_target_nodes().items() if node == cxl_node)
    h = CxlHotplug(dax, cxl_node)
    yield h
    if not h.online() or h.driver() != "kmem":
        h.replug()
