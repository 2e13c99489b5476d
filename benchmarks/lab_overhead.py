#!/usr/bin/env python3
"""The daemon's CPU next to its kdamonds' CPU on the real kernel: the move_pages engine tracking 8, 32, 64 processes.

    bash tests/lab/run.sh benchmarks/lab_overhead.py -q -s -p no:hypothesispytest   # from the host, as root
    python benchmarks/lab_overhead.py [--procs 8,32,64] [--ticks 6] [--seconds 45] [--mib 4]   # in the guest

One guest, sizes in increasing order: workload processes (tests/lab/workload.py, --mib each on node 0 or 1, the
first MiB re-touched every 50 ms, in the cgroup /cxltierd-overhead) are added until N run, then
`cxltierd run --backend host` starts with the move_pages engine, the default 5 s interval and
`damon.max_processes: N`, managing that cgroup, so its pool runs one vaddr kdamond per workload (default DAMON
intervals: 5 ms sampling, 100 ms aggregation). From the daemon's first tick (which starts the kdamonds) a window
of --ticks ticks is measured, or of --seconds when the ticks stretch because the kdamonds take every CPU (the
guest has two): the daemon's CPU (utime + stime of its /proc/PID/stat, all its threads) and the CPU of every
`kdamond.N` kernel thread (their /proc/PID/stat, polled twice a second; DAMON_STAT's own kdamond on 7.3 left out,
though the daemon turns it off while it runs), both as a share of one core over the window's wall time, and the
daemon's RSS at its end. Nothing is hot on the CXL node, so the window measures tracking, not migration (the pages
the kernel migrated meanwhile are shown). Then the daemon is stopped and the next size starts.

Under TCG (QEMU's software CPU) every instruction is emulated: the absolute shares are this lab's, not a real
machine's. Read the ratios: kdamond CPU / daemon CPU, and the cost per tracked process.
The table is printed and written to $CXLTIERD_LAB_SHARE/benchmarks/lab_overhead.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/lab"))  # the lab's helpers: labkit.py

import labkit
from labkit import in_guest, publish

CGROUP = "/cxltierd-overhead"
INTERVAL = 5.0  # the daemon's default tick
HZ = os.sysconf("SC_CLK_TCK")
DAMON_STAT_PID = "/sys/module/damon_stat/parameters/kdamond_pid"
KDAMOND = re.compile(r"kdamond\.\d+")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) or kernel thread, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def kdamond_threads() -> dict[int, float]:
    """pid -> CPU seconds of every kdamond.N kernel thread but DAMON_STAT's."""
    skip = Path(DAMON_STAT_PID).read_text().strip() if Path(DAMON_STAT_PID).exists() else ""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or d.name == skip:
            continue
        with contextlib.suppress(OSError):
            if KDAMOND.fullmatch((d / "comm").read_text().strip()):
                out[int(d.name)] = cpu_seconds(int(d.name))
    return out


class TickReader:
    """The daemon's finished ticks, from its log, reading only what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.last, self.rest = path, 0, 0, ""

    def __call__(self) -> int:
        with self.path.open(errors="replace") as f:
            f.seek(self.offset)
            text = self.rest + f.read()
            self.offset = f.tell()
        head, _, self.rest = text.rpartition("\n")
        found = re.findall(r"\btick (\d+):", head)
        if found:
            self.last = int(found[-1])
        return self.last


def start_workloads(n: int, mib: int) -> list[subprocess.Popen[str]]:
    """n workload processes started side by side (their interpreters start in parallel), once each is ready."""
    procs = []
    for i in range(n):
        args = ["--node", str(i % 2), "--mib", str(mib), "--hot-mib", "1", "--sleep-ms", "50", "--cgroup", CGROUP]
        cmd = [sys.executable, str(labkit.LAB_DIR / "workload.py"), *args]
        env = {**os.environ, "LD_BIND_NOW": "1"}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
    for p in procs:
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], 300)
        line = p.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"workload {p.pid} did not start")
        json.loads(line)
    return procs


@dataclass
class Row:
    procs: int
    kdamonds: int  # kdamond threads seen in the window
    ticks: int
    wall: float  # seconds
    daemon_cpu: float  # CPU seconds in the window
    kdamond_cpu: float
    rss: int
    migrated: int  # pgmigrate_success delta in the window

    def cells(self) -> list[str]:
        d_share, k_share = self.daemon_cpu / self.wall, self.kdamond_cpu / self.wall
        ratio = f"{self.kdamond_cpu / self.daemon_cpu:.1f}" if self.daemon_cpu else "n/a"
        return [
            str(self.procs),
            str(self.kdamonds),
            f"{self.ticks} ({self.wall:.0f} s)",
            f"{self.wall / self.ticks:.1f} s" if self.ticks else "none finished",
            f"{1000 * self.daemon_cpu / self.ticks:.0f} ms" if self.ticks else "n/a",
            f"{100 * d_share:.1f}%",
            f"{100 * k_share:.1f}%",
            ratio,
            f"{1000 * self.daemon_cpu / self.ticks / self.procs:.1f} ms" if self.ticks else "n/a",
            f"{100 * k_share / self.procs:.2f}%",
            f"{self.rss >> 20} MiB",
            str(self.migrated),
        ]


def measure(n: int, ticks: int, seconds: float, work: Path) -> Row:
    """One daemon tracking the n running workloads: CPU and RSS from its first tick (which starts the kdamonds) over
    `ticks` more ticks or `seconds`, whichever ends first."""
    policy: dict[str, Any] = {
        "engine": "move_pages",
        "processes": {"manage": [{"cgroup": CGROUP}], "min_rss": "1MiB"},
        "damon": {"max_processes": n},
    }
    daemon = labkit.LabDaemon(work / f"daemon-{n}", policy)
    try:
        tick = TickReader(daemon.log_path)
        daemon.wait_for(lambda: tick() >= 1, 180, "the first tick", poll=0.5)
        first, t0, d0, k0 = tick(), time.monotonic(), cpu_seconds(daemon.pid), kdamond_threads()
        m0 = labkit.vmstat()["pgmigrate_success"]
        seen = dict(k0)  # pid -> latest CPU seconds
        while tick() < first + ticks and time.monotonic() - t0 < seconds:
            daemon.alive()
            seen |= kdamond_threads()
            time.sleep(0.5)
        t1, d1, k1 = time.monotonic(), cpu_seconds(daemon.pid), kdamond_threads()
        seen |= k1
        rss = rss_bytes(daemon.pid)
        migrated = labkit.vmstat()["pgmigrate_success"] - m0
        kcpu = sum(cpu - k0.get(pid, 0.0) for pid, cpu in seen.items())
        running = sum(1 for state, _ in labkit.read_kdamonds() if state == "on")
        assert running == n, f"{running} kdamonds on for {n} workloads:\n{daemon.tail()}"
        return Row(n, len(seen), tick() - first, t1 - t0, d1 - d0, kcpu, rss, migrated)
    finally:
        stop(daemon)
        daemon.keep_log(f"overhead-{n}")


def stop(daemon: labkit.LabDaemon, timeout: float = 30.0) -> None:
    """SIGTERM; a daemon starved in the middle of a tick gets SIGKILL after `timeout` s, and its kdamonds go."""
    if daemon.proc.poll() is not None:
        return
    daemon.proc.terminate()
    try:
        daemon.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"the daemon did not stop within {timeout:g} s of SIGTERM (in a tick): killed", flush=True)
        daemon.proc.kill()
        daemon.proc.wait()
        labkit.remove_kdamonds()


def run(sizes: list[int], ticks: int, seconds: float, mib: int) -> str:
    labkit.loopback_up()
    cg_root = Path("/sys/fs/cgroup")
    (cg_root / "cgroup.subtree_control").write_text("+memory")
    (cg_root / CGROUP.strip("/")).mkdir(exist_ok=True)
    saved = Path("/proc/sys/kernel/numa_balancing").read_text().strip()
    Path("/proc/sys/kernel/numa_balancing").write_text("0")
    procs: list[subprocess.Popen[str]] = []
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="cxltierd-overhead-") as work:
            for n in sorted(sizes):
                procs += start_workloads(n - len(procs), mib)
                rows.append(measure(n, ticks, seconds, Path(work)))
                print(" | ".join(rows[-1].cells()), flush=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        Path("/proc/sys/kernel/numa_balancing").write_text(saved)
        labkit.remove_kdamonds()
        with contextlib.suppress(OSError):
            (cg_root / CGROUP.strip("/")).rmdir()
    head = [
        "processes",
        "kdamonds",
        "ticks (window)",
        "wall per tick",
        "daemon CPU/tick",
        "daemon % of a core",
        "kdamonds % of a core",
        "kdamonds / daemon",
        "daemon CPU/tick/process",
        "kdamond % per process",
        "daemon RSS",
        "pages migrated",
    ]
    lines = [
        f"The move_pages engine's cost on {os.uname().release} (TCG: read the ratios), {mib} MiB workloads, "
        f"interval {INTERVAL:g} s, window from the first tick: {ticks} ticks or {seconds:g} s",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", default="8,32,64", help="workload process counts (max_processes follows)")
    ap.add_argument("--ticks", type=int, default=6, help="ticks per measured window")
    ap.add_argument("--seconds", type=float, default=45.0, help="longest window (when ticks stretch)")
    ap.add_argument("--mib", type=int, default=4, help="buffer per workload process")
    args = ap.parse_args(argv)
    publish(run([int(n) for n in args.procs.split(",")], args.ticks, args.seconds, args.mib), "lab_overhead")
    return 0


def test_lab_overhead() -> None:
    in_guest("lab_overhead.py", main)


if __name__ == "__main__":
    sys.exit(main())
