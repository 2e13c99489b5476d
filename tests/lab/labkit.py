"""The lab's helpers, in one module that both the lab tests (tests/lab) and the lab benchmarks (benchmarks/lab_*.py)
import; tests/lab/conftest.py turns some of them into fixtures and holds nothing else. It imports no cxltierd module
at load time and never a conftest.

  DAMON sysfs        damon_io(path, value=None), read(path) (retrying EBUSY), read_kdamonds(), remove_kdamonds()
  page placement     pages_on_nodes(pid, addr, length), move_pages(pid, addr, length, node) (move_pages(2)),
                     vmstat(), assert_agrees(ours, kernel, v0, v1) (a page count vs pgmigrate_success)
  topology           dax_target_nodes(), CxlHotplug (unplug / replug the CXL node through sysfs)
  processes          Workload (a running workload.py), start_workload(args), COMPANION (a CPU-sharing waker)
  the daemon         LabDaemon (`cxltierd run --backend host`), parse_metrics(text), loopback_up()
  benchmarks         publish(table, name), in_guest(script, main)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LAB_DIR = Path(__file__).resolve().parent
REPO = LAB_DIR.parents[1]
IN_LAB = os.environ.get("CXLTIERD_LAB") == "1"

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


# ---- DAMON sysfs and the kernel's migration counters --------------------------------------------------------------


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


# ---- page placement -----------------------------------------------------------------------------------------------


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


@dataclass
class Workload:
    """A running tests/lab/workload.py: its buffer is [addr, addr + length), the first hot_length bytes are hot, the
    warm_length bytes after them warm."""

    proc: subprocess.Popen[str]
    pid: int
    addr: int
    length: int
    page_size: int
    node: int
    hot_length: int
    warm_length: int = 0  # the range after the hot one, touched less often (workload.py --warm-mib)

    @property
    def pages(self) -> int:
        return self.length // self.page_size

    def placement(self) -> dict[int, int]:
        return pages_on_nodes(self.pid, self.addr, self.length)


WorkloadFactory = Callable[..., Workload]


def remove_cgroup(group: Path) -> None:
    """SIGKILL every process left in a cgroup v2 group (for up to 30 s), then remove it (retried while the last
    charges drain: EBUSY)."""
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
        except OSError:
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
        from cxltierd.service.control import request

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


# ---- the lab benchmarks -------------------------------------------------------------------------------------------


def start_workload(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """tests/lab/workload.py with these arguments, once it has printed its JSON line (pid, addr, length, ...)."""
    cmd = [sys.executable, str(LAB_DIR / "workload.py"), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "LD_BIND_NOW": "1"})
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"workload {args} did not start")
    info: dict[str, Any] = json.loads(line)
    return proc, info


def publish(table: str, name: str) -> None:
    """Print the table; in the guest also leave it in the share as benchmarks/NAME.md for the host."""
    print(table)
    share = os.environ.get("CXLTIERD_LAB_SHARE")
    if share:
        out = Path(share) / "benchmarks"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(table + "\n")


def in_guest(script: str, main: Callable[[list[str]], int]) -> None:
    """The pytest entry: run main with its defaults in the lab guest, skip anywhere else."""
    import pytest

    if os.environ.get("CXLTIERD_LAB") != "1":
        pytest.skip(f"needs the QEMU lab guest: bash tests/lab/run.sh benchmarks/{script} -s")
    main([])


# ---- the cascade's verdicts: where parts of a workload are, what the daemon moved (test_cascade_lab, tiers3) ----


def split(
    w: Workload, pages_on_nodes: Callable[[int, int, int], dict[int, int]], start: int, size: int
) -> dict[int, float]:
    """{node: share of the pages} of [start, start + size) of the buffer (offsets wrap around its end)."""
    counts: dict[int, int] = {}
    for s, n in ((start, min(size, w.length - start)), (0, max(0, start + size - w.length))):
        for node, c in pages_on_nodes(w.pid, w.addr + s, n).items() if n else ():
            counts[node] = counts.get(node, 0) + c
    total = sum(counts.values())
    return {node: c / total for node, c in counts.items()}


def numa_maps(pid: int, addr: int) -> dict[int, int]:
    """{node: pages} of the VMA starting at `addr`, from /proc/PID/numa_maps (the N<node>=<pages> fields)."""
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        if line.startswith(f"{addr:x} "):
            return {int(n): int(c) for n, c in re.findall(r"\bN(\d+)=(\d+)", line)}
    raise AssertionError(f"no VMA at {addr:#x} in /proc/{pid}/numa_maps")


def pairs(d: LabDaemon) -> dict[str, int]:
    moved: dict[str, int] = d.status()["counters"]["migrated_pages"]
    return {k: v for k, v in moved.items() if v}


def settle(d: LabDaemon, ticks: int = 3, timeout: float = 90.0) -> dict[str, int]:
    """The migrated pages per pair once they stayed the same for `ticks` ticks."""
    deadline = time.monotonic() + timeout
    last, since = pairs(d), d.ticks()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = pairs(d)
        if now != last:
            last, since = now, d.ticks()
        elif d.ticks() - since >= ticks:
            return now
    raise AssertionError(f"migrations did not settle within {timeout:g}s:\n{d.tail()}")


def metric_pairs(d: LabDaemon) -> dict[str, int]:
    return {
        f"{labels['from_tier']}->{labels['to_tier']}": int(v)
        for labels, v in d.metrics().get("cxltierd_migrated_pages_total", [])
        if v
    }


# ---- a fixture host from the guest: what discovery reads, copied with its symlinks --------------------------------


def capture_host(dest: Path) -> int:
    """Copy into `dest` (a fixture host root: dest/sys, dest/proc) every file, directory and symlink that cxltierd's
    discovery touches on this host, plus the names in each directory it lists (subdirectories empty, symlinks as
    they are), so `cxltierd topology --root dest` sees what it sees here. Unreadable files (write-only attributes)
    become empty placeholders. Returns the number of paths written."""
    from cxltierd.discovery import discover
    from cxltierd.hostfs import HostFS

    touched: set[str] = set()
    listed: set[str] = set()

    class Recording(HostFS):
        def exists(self, kpath: str) -> bool:
            touched.add(kpath)
            return super().exists(kpath)

        def is_dir(self, kpath: str) -> bool:
            touched.add(kpath)
            return super().is_dir(kpath)

        def listdir(self, kpath: str, sort: bool = True) -> list[str]:
            listed.add(kpath)
            return super().listdir(kpath, sort)

        def _raw(self, kpath: str) -> bytes:
            touched.add(kpath)
            return super()._raw(kpath)

        def readlink(self, kpath: str) -> str | None:
            touched.add(kpath)
            return super().readlink(kpath)

        def realpath(self, kpath: str) -> str:
            touched.add(kpath)
            return super().realpath(kpath)

    discover(Recording("/"))
    done: set[str] = set()

    def put(path: str) -> None:
        """Create `path` under dest: each symlink on the way as a link (its target created too), the last component
        as a directory, a copied file or an empty placeholder; nothing when it does not exist here."""
        cur = ""
        for part in path.strip("/").split("/"):
            cur = f"{cur}/{part}"
            if cur in done:
                if os.path.islink(cur):
                    cur = os.path.realpath(cur)
                continue
            out = f"{dest}{cur}"
            if os.path.islink(cur):
                done.add(cur)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                target = os.readlink(cur)
                if not target.startswith("/") and not os.path.lexists(out):
                    os.symlink(target, out)
                cur = os.path.realpath(cur)
                put(cur)
            elif os.path.isdir(cur):
                done.add(cur)
                os.makedirs(out, exist_ok=True)
            elif os.path.isfile(cur):
                done.add(cur)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                try:
                    data = Path(cur).read_bytes()
                except OSError:
                    data = b""
                Path(out).write_bytes(data)
            else:
                return

    for path in sorted(touched | listed):
        if path.startswith(("/sys/", "/proc/")) and not path.startswith("/proc/self"):
            put(path)
    for d in sorted(listed):
        if not d.startswith("/sys/"):
            continue
        real = os.path.realpath(d)
        for name in os.listdir(real) if os.path.isdir(real) else ():
            entry = f"{real}/{name}"
            if os.path.islink(entry):
                put(entry)
            elif os.path.isdir(entry):
                os.makedirs(f"{dest}{entry}", exist_ok=True)
    # git keeps no empty directory: a device directory keeps its uevent file, any other empty one goes.
    for dirpath, _, _ in os.walk(dest, topdown=False):
        live = dirpath[len(str(dest)) :]
        if not os.listdir(dirpath):
            if os.path.isfile(f"{live}/uevent"):
                try:
                    data = Path(f"{live}/uevent").read_bytes()
                except OSError:  # write-only (a bus's uevent)
                    data = b""
                Path(f"{dirpath}/uevent").write_bytes(data)
            else:
                os.rmdir(dirpath)
    return len(done)


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


DAMON_NAMES = {
    "action": ("migrate_hot", "migrate_cold", "stat", "lru_deprio"),
    "filter": ("anon", "memcg", "young", "addr"),
    "goal": ("user_input", "some_mem_psi_us", "node_mem_used_bp", "node_mem_free_bp"),
}


def accepted_by_hand(names: dict[str, tuple[str, ...]] = DAMON_NAMES) -> set[str]:
    """What this kernel's DAMON sysfs accepts, found the way an operator would with echo: a scratch kdamond (never
    turned on), each name written into its file, EINVAL meaning no. Independent of cxltierd's probe."""
    k = KDAMONDS / "0"
    scheme = k / "contexts/0/schemes/0"
    damon_io(KDAMONDS / "nr_kdamonds", "1")
    try:
        damon_io(k / "contexts/nr_contexts", "1")
        damon_io(k / "contexts/0/schemes/nr_schemes", "1")
        damon_io(scheme / "filters/nr_filters", "1")
        damon_io(scheme / "quotas/goals/nr_goals", "1")
        files = {
            "action": scheme / "action",
            "filter": scheme / "filters/0/type",
            "goal": scheme / "quotas/goals/0/target_metric",
        }
        out = set()
        for kind, candidates in names.items():
            for name in candidates:
                try:
                    damon_io(files[kind], name)
                except OSError as e:
                    assert e.errno == errno.EINVAL, e
                    continue
                out.add(name if kind == "action" else f"{kind}:{name}")
        if (k / "refresh_ms").exists():
            out.add("refresh_ms")
        return out
    finally:
        damon_io(KDAMONDS / "nr_kdamonds", "0")


def kdamond_cpu_seconds() -> float:
    """CPU time (user + system) of every running kdamond thread, from /proc/PID/stat (what DAMON itself costs)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for i in range(int(read(KDAMONDS / "nr_kdamonds"))):
        pid = read(KDAMONDS / f"{i}/pid")
        if pid in ("", "-1"):
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)
    return total


# ---- QEMU's QMP, through the runner's relay ------------------------------------------------------------------------

CXL_DEVICE = "/machine/peripheral/cxl-vmem0"  # the type-3 device's QOM path (tests/lab/run.sh: id=cxl-vmem0)


def qmp(execute: str, timeout: float = 60.0, **arguments: Any) -> dict[str, Any]:
    """One QMP command run by QEMU on the host (the guest cannot reach QMP): the request goes into the share's
    .lab/qmp-requests, tests/lab/qmp_relay.py (started by run.sh) answers it. QEMU's reply ({"return": ...})."""
    share = os.environ.get("CXLTIERD_LAB_SHARE")
    assert share, "CXLTIERD_LAB_SHARE is not set: run inside the lab (bash tests/lab/run.sh)"
    box = Path(share) / ".lab" / "qmp-requests"
    box.mkdir(parents=True, exist_ok=True)
    name = f"{os.getpid()}-{time.monotonic_ns()}"
    tmp = box / f"{name}.tmp-req"
    tmp.write_text(json.dumps({"execute": execute, "arguments": arguments}))
    tmp.rename(box / f"{name}.req")
    reply = box / f"{name}.rep"
    deadline = time.monotonic() + timeout
    while not reply.exists():
        assert time.monotonic() < deadline, f"no QMP reply to {execute} within {timeout:g}s (is the relay running?)"
        time.sleep(0.1)
    doc: dict[str, Any] = json.loads(reply.read_text())
    reply.unlink()
    return doc
