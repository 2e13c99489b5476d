"""Lab tests: they run only inside the QEMU lab guest (`bash tests/lab/run.sh tests/lab`), where CXLTIERD_LAB=1.

On any other host every test under tests/lab/ is marked `lab` and skipped. Fixtures and helpers for lab tests:
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
import ctypes
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from labfs import damon_io

LAB_DIR = Path(__file__).resolve().parent
IN_LAB = os.environ.get("CXLTIERD_LAB") == "1"
SKIP_REASON = "needs the QEMU lab guest: run bash tests/lab/run.sh"

CXLTIERD = Path(sys.executable).parent / "cxltierd"
CGROUP_ROOT = Path("/sys/fs/cgroup")
TEST_CGROUP = "/cxltierd-test"
KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")
NB_KNOBS = (
    "/proc/sys/kernel/numa_balancing",
    "/sys/kernel/mm/numa/demotion_enabled",
    "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps",
    "/sys/module/damon_stat/parameters/enabled",  # 7.3: the kernel's DAMON_STAT, which a DAMON engine turns off
)
SYS_MOVE_PAGES = 279
MPOL_MF_MOVE = 2
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
BATCH = 65536
COMPANION = """import os, time
os.sched_setaffinity(0, {{{cpu}}})
while True:
    time.sleep(0.0005)
"""


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
    """Factory: workload(node, mib, hot_mib=0, *, sleep_ms=1.0, cpu=None, cgroup=None, unbind=False) -> Workload.

    Starts tests/lab/workload.py with LD_BIND_NOW=1, waits until the whole buffer is touched, SIGKILLs it at teardown.
    cgroup: join that cgroup (a path below /sys/fs/cgroup, see the `test_cgroup` fixture) before allocating; unbind:
    drop the buffer's MPOL_BIND after touching it, so NUMA balancing may move it. companion (needs cpu): also start a
    process that wakes every 0.5 ms on the same CPU (in the caller's cgroup, so a cgroup selector leaves it out).

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
def test_cgroup() -> Iterator[str]:
    """The cgroup v2 group /cxltierd-test with the memory controller on (its path, relative to /sys/fs/cgroup).

    The root's subtree_control gets +memory first (a child has no memory.* files, and a DAMOS memcg filter no memcg
    to match, without it). At teardown every process left in the group is SIGKILLed and the group removed.
    """
    (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory")
    group = CGROUP_ROOT / TEST_CGROUP.strip("/")
    group.mkdir(exist_ok=True)
    yield TEST_CGROUP
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [int(x) for x in (group / "cgroup.procs").read_text().split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for _ in range(50):
        try:
            group.rmdir()
            break
        except OSError:  # EBUSY while the last charges drain
            time.sleep(0.1)


def read_kdamonds() -> list[tuple[str, str]]:
    """(state, pid) of every kdamond in DAMON sysfs."""
    nr = int(damon_io(KDAMONDS / "nr_kdamonds"))
    return [(damon_io(KDAMONDS / f"{i}/state"), damon_io(KDAMONDS / f"{i}/pid")) for i in range(nr)]


def remove_kdamonds() -> None:
    """Turn every kdamond off and remove them all (test teardown: leave DAMON as the guest booted)."""
    for i, (state, _) in enumerate(read_kdamonds()):
        if state == "on":
            with contextlib.suppress(OSError):
                damon_io(KDAMONDS / f"{i}/state", "off")
    damon_io(KDAMONDS / "nr_kdamonds", "0")


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition -> {sample name: [(labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


class LabDaemon:
    """`cxltierd run --backend host` in a subprocess, with its own policy file, control socket and state dir.

    The log (debug level) goes to a file; tests wait on log lines, scrape /metrics and ask the control socket.
    """

    def __init__(self, workdir: Path, policy: dict[str, Any] | str, state_dir: Path | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.policy_path = self.dir / "policy.yaml"
        text = policy if isinstance(policy, str) else yaml.safe_dump(policy, sort_keys=False)
        self.policy_path.write_text(text)
        self.socket = self.dir / "ctl.sock"
        self.state_dir = state_dir or self.dir / "state"
        self.log_path = self.dir / "daemon.log"
        cmd = [str(CXLTIERD), "run", "--backend", "host", "--config", str(self.policy_path)]
        cmd += ["--listen", "127.0.0.1:0", "--socket", str(self.socket), "--state-dir", str(self.state_dir)]
        cmd += ["--log-level", "debug"]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
        """predicate()'s first true value within `timeout` s; fails (with the log tail) when the daemon exits."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}:\n{self.tail()}")
            time.sleep(poll)

    def alive(self) -> None:
        """Fail (with the log tail) if the daemon has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        match: re.Match[str] = self.wait_for(lambda: re.search(pattern, self.log()), timeout, f"log /{pattern}/")
        return match

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = int(self.wait_log(r"metrics on http://[^:]+:(\d+)/metrics").group(1))
        return self._port

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            return parse_metrics(r.read().decode())

    def status(self) -> dict[str, Any]:
        from cxltierd.control import request

        reply = request(str(self.socket), "status", timeout=30)
        assert reply.get("ok"), reply
        doc: dict[str, Any] = reply["status"]
        return doc

    def ticks(self) -> int:
        """Ticks finished so far, from the log (no socket round trip)."""
        found = re.findall(r"\btick (\d+):", self.log())
        return int(found[-1]) if found else 0

    def wait_ticks(self, n: int, timeout: float = 120.0) -> None:
        self.wait_for(lambda: self.ticks() >= n, timeout, f"{n} ticks")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` and wait for the exit status (SIGKILL after `timeout` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"daemon did not stop within {timeout:g}s after signal {sig}:\n{self.tail()}"
                ) from None
        return self.proc.returncode

    def keep_log(self, name: str) -> None:
        """Copy the log to $CXLTIERD_LAB_SHARE/logs/NAME.log (it outlives the guest)."""
        share = os.environ.get("CXLTIERD_LAB_SHARE")
        if share:
            dest = Path(share) / "logs"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, dest / f"{name}.log")


DaemonFactory = Callable[..., LabDaemon]


def loopback_up() -> None:
    """The guest's PID 1 leaves `lo` down; the daemon's /metrics listens on 127.0.0.1."""
    if not int(Path("/sys/class/net/lo/flags").read_text(), 16) & 1:  # IFF_UP
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)


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


class CxlHotplug:
    """Take the CXL node away and bring it back the way an operator would, through sysfs (real udev events).

    unplug(): offline every memory block of the node, then unbind its dax device from kmem (the kernel removes the
    memory and the node). replug(): bind the dax device to kmem again; memhp_default_state=online_movable onlines it.
    """

    def __init__(self, dax: str, node: int) -> None:
        self.dax = dax
        self.node = node
        self.node_dir = Path(f"/sys/devices/system/node/node{node}")
        self.blocks = sorted(p.name for p in self.node_dir.glob("memory[0-9]*"))
        assert self.blocks, f"node {node} has no memory blocks"

    def driver(self) -> str | None:
        link = Path(f"/sys/bus/dax/devices/{self.dax}/driver")
        return link.resolve().name if link.exists() else None

    def unplug(self) -> None:
        for name in self.blocks:
            state = Path(f"/sys/devices/system/memory/{name}/state")
            if state.read_text().strip() == "online":
                state.write_text("offline")
        Path("/sys/bus/dax/drivers/kmem/unbind").write_text(self.dax)

    def online(self) -> bool:
        return self.node_dir.is_dir() and all(
            Path(f"/sys/devices/system/memory/{b}/state").read_text().strip() == "online" for b in self.blocks
        )

    def replug(self, timeout: float = 60.0) -> None:
        current = self.driver()
        if current not in (None, "kmem"):
            Path(f"/sys/bus/dax/drivers/{current}/unbind").write_text(self.dax)
        if self.driver() is None:
            Path("/sys/bus/dax/drivers/kmem/bind").write_text(self.dax)
        deadline = time.monotonic() + timeout
        while not self.online():
            for b in self.blocks:  # blocks that came back offline (should not happen with online_movable)
                state = Path(f"/sys/devices/system/memory/{b}/state")
                if state.exists() and state.read_text().strip() == "offline":
                    with contextlib.suppress(OSError):
                        state.write_text("online_movable")
            assert time.monotonic() < deadline, f"node {self.node} did not come back online"
            time.sleep(0.2)


@pytest.fixture
def cxl_hotplug(cxl_node: int) -> Iterator[CxlHotplug]:
    dax = next(name for name, node in dax_target_nodes().items() if node == cxl_node)
    h = CxlHotplug(dax, cxl_node)
    yield h
    if not h.online() or h.driver() != "kmem":
        h.replug()
