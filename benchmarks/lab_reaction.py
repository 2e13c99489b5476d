#!/usr/bin/env python3
"""Reaction time on the real kernel: how long after a hot set moves to fresh pages on the CXL node 90% of it is on
DDR, for each cxltierd engine, against the migration floor measured in the same run.

    bash tests/lab/run.sh benchmarks/lab_reaction.py -q -s -p no:hypothesispytest   # from the host, as root
    bash tests/lab/run.sh benchmarks/lab_reaction.py -q -s -p no:hypothesispytest -k numa_balancing   # one engine
    python benchmarks/lab_reaction.py [--shifts 5] [--cap 60] [--only ROW ...] [--trace]   # inside the guest

The workload (tests/lab/workload.py, in the cgroup /cxltierd-bench, pinned to CPU 1 with a context-switching
companion, MPOL_BIND dropped once its buffer is on the CXL node) keeps 16 MiB of a 112 MiB buffer hot. Each engine
row starts it afresh with the daemon (`cxltierd run --backend host`, interval 1 s, the default policy otherwise),
waits until 90% of the first hot range is on DDR, then --shifts times moves the hot range 16 MiB on (SIGUSR1: the
next range, untouched and on the CXL node until then) and polls the new range's placement (move_pages(2) queries,
every 0.2 s) until 90% of it is on DDR, up to --cap seconds. Each shift is one run: seconds and the daemon's ticks
from the shift to 90%. The last 16 MiB are never hot: the share of them on DDR at the end is the cold memory moved.

  floor                    no daemon: each shift, one move_pages(2) call moves exactly the new hot range to node 0
                           (what an engine that knew the hot set at once would still have to pay under TCG)
  cxltierd move_pages      DAMON vaddr tracking + batched move_pages(2)
  cxltierd damos           DAMOS migrate_hot on paddr
  cxltierd numa_balancing  the kernel's NUMA-balancing tiering driven by the daemon (hot_threshold 0.25/s; the scan
                           knobs as the engine derives them from the policy: scan_period 25..31 ms, scan_size 64 MB)

Printed: every run's seconds, their median and spread, the median and worst after subtracting the floor's median,
ticks, and the issue's bound (a DAMON engine at most 3 s over the floor in every run, numa_balancing at most 6 s).
The table is printed and written to $CXLTIERD_LAB_SHARE/benchmarks/lab_reaction.md. Under pytest, `-k move_pages`,
`-k damos` or `-k numa_balancing` runs the floor and that engine's row only. --trace (on for the numa_balancing
selection) prints, about once a second after each shift, the new range's share on DDR and what the kernel's
NUMA balancing did meanwhile: /proc/vmstat numa_pte_updates (pages its scanner armed), numa_hint_faults,
pgpromote_candidate and pgpromote_success, the workload's mm->numa_scan_seq (finished scanner passes) and CPU time
from /proc/PID/sched, and the reasons its scanner skipped the workload's VMAs (tracepoint sched_skip_vma_numa).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/lab"))  # the lab's helpers: labkit.py

import labkit
import pytest
from labkit import in_guest, publish, start_workload

MIB, HOT_MIB, CPU = 112, 16, 1
CGROUP = "/cxltierd-bench"
DDR = (0, 1)
NB = "/proc/sys/kernel/numa_balancing"
ROWS = ("floor", "cxltierd move_pages", "cxltierd damos", "cxltierd numa_balancing")
BOUND = {"move_pages": 3.0, "damos": 3.0, "numa_balancing": 6.0}  # seconds over the floor, every run (issue 17)
VMSTAT = ("numa_pte_updates", "numa_hint_faults", "pgpromote_candidate", "pgpromote_success")
SCHED = {"mm->numa_scan_seq": "seq", "se.sum_exec_runtime": "cpu_ms"}


TRACING = Path("/sys/kernel/tracing")


class ScanTrace:
    """The sched_skip_vma_numa tracepoint for the workload: why the kernel's NUMA-balancing scanner passed its VMAs
    over (pid_inactive: no hint fault there lately, seq_completed: already scanned in this pass, ...)."""

    ENABLE = TRACING / "events/sched/sched_skip_vma_numa/enable"

    def __init__(self, pid: int) -> None:
        self.on = False
        try:
            (TRACING / "set_event_pid").write_text(str(pid))
            self.ENABLE.write_text("1")
            (TRACING / "trace").write_text("")
            (TRACING / "tracing_on").write_text("1")
            self.on = True
        except OSError as e:
            print(f"  trace: no sched_skip_vma_numa tracepoint ({e})", flush=True)

    def take(self) -> str:
        """VMA skips since the last call, by reason."""
        if not self.on:
            return ""
        lines = (TRACING / "trace").read_text().splitlines()
        (TRACING / "trace").write_text("")
        skipped = Counter(line.rsplit("reason=", 1)[1].strip() for line in lines if "reason=" in line)
        return ", vma skips " + (" ".join(f"{k}:{v}" for k, v in sorted(skipped.items())) or "-")

    def stop(self) -> None:
        if self.on:
            self.ENABLE.write_text("0")
            (TRACING / "set_event_pid").write_text("")


def kernel_view(pid: int) -> dict[str, float]:
    """The NUMA-balancing counters of /proc/vmstat and the workload's scan sequence and CPU time (ms)."""
    out: dict[str, float] = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in VMSTAT:
            out[key] = int(value)
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/sched").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in SCHED:
                out[SCHED[key.strip()]] = float(value.split()[0])
    return out


@dataclass
class Row:
    name: str
    seconds: list[float | None] = field(default_factory=list)  # per shift: to 90% on DDR (None: not within the cap)
    ticks: list[int] = field(default_factory=list)
    cold: float = 0.0  # share of the never-hot part on DDR at the end
    note: str = ""

    def reached(self) -> list[float]:
        return [s for s in self.seconds if s is not None]

    def cells(self, floor: float | None) -> list[str]:
        if self.note:
            return [self.name, f"not run: {self.note}", "", "", "", ""]
        runs = ", ".join("-" if s is None else f"{s:.1f}" for s in self.seconds)
        got = self.reached()
        missed = len(self.seconds) - len(got)
        med = f"{statistics.median(got):.1f} ({min(got):.1f}-{max(got):.1f})" if got else "never"
        if missed:
            med += f", {missed} not reached"
        over = ""
        if floor is not None and got and self.name != "floor":
            extra = [s - floor for s in got]
            over = f"{statistics.median(extra):.1f} / {max(extra):.1f}"
        ticks = f"{statistics.median(self.ticks):g} / {max(self.ticks)}" if self.ticks else ""
        cold = "" if self.name == "floor" else f"{100 * self.cold:.1f}%"
        return [self.name, runs, med, over, ticks, cold]

    def verdict(self, floor: float | None) -> str:
        engine = self.name.split()[-1]
        if self.note or engine not in BOUND or floor is None:
            return ""
        bound = BOUND[engine]
        ok = len(self.reached()) == len(self.seconds) and all(s - floor <= bound for s in self.reached())
        return f"{self.name}: {'met' if ok else 'MISSED'} (at most {bound:g} s over the floor in every run)"


class Bench:
    def __init__(self, shifts: int, cap: float, work: Path, trace: bool = False) -> None:
        self.shifts = shifts
        self.cap = cap
        self.work = work
        self.trace = trace
        self.scans: ScanTrace | None = None
        self.procs: list[subprocess.Popen[str]] = []

    def knob(self, path: str, value: str, saved: dict[str, str]) -> None:
        saved.setdefault(path, Path(path).read_text().strip())
        Path(path).write_text(value)

    def workload(self, node: int) -> dict[str, Any]:
        self.procs.append(subprocess.Popen([sys.executable, "-c", labkit.COMPANION.format(cpu=CPU)], text=True))
        args = ["--node", str(node), "--mib", str(MIB), "--hot-mib", str(HOT_MIB), "--cpu", str(CPU)]
        proc, info = start_workload([*args, "--shift-mib", str(HOT_MIB), "--cgroup", CGROUP, "--unbind"])
        self.procs.append(proc)
        return info

    def on_ddr(self, w: dict[str, Any], start_mib: int, mib: int = HOT_MIB) -> float:
        counts = labkit.pages_on_nodes(w["pid"], w["addr"] + (start_mib << 20), mib << 20)
        return sum(v for n, v in counts.items() if n in DDR) / ((mib << 20) // w["page_size"])

    def wait(self, w: dict[str, Any], start_mib: int, daemon: labkit.LabDaemon | None) -> float | None:
        """Seconds until 90% of the hot range at start_mib is on DDR, None after the cap."""
        t0 = time.monotonic()
        base = kernel_view(w["pid"]) if self.trace else {}
        if self.scans:
            self.scans.take()  # what ran before the shift
        traced = t0
        while time.monotonic() - t0 < self.cap:
            share = self.on_ddr(w, start_mib)
            if self.trace and (share >= 0.9 or time.monotonic() - traced >= 1.0):
                traced = time.monotonic()
                now = kernel_view(w["pid"])
                steps = " ".join(f"{k}+{now.get(k, 0) - base.get(k, 0):g}" for k in VMSTAT)
                print(
                    f"  trace {start_mib} MiB +{traced - t0:.1f}s: {100 * share:.0f}% on DDR, {steps}, "
                    f"scan_seq {now.get('seq', -1):g}, cpu +{now.get('cpu_ms', 0) - base.get('cpu_ms', 0):.0f} ms"
                    + (self.scans.take() if self.scans else ""),
                    flush=True,
                )
            if share >= 0.9:
                return time.monotonic() - t0
            if daemon is not None:
                daemon.alive()
            time.sleep(0.2)
        return None

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self.procs = []

    def floor(self, cxl_node: int) -> Row:
        row = Row("floor")
        w = self.workload(cxl_node)
        try:
            for k in range(1, self.shifts + 1):
                os.kill(w["pid"], signal.SIGUSR1)
                t0 = time.monotonic()
                labkit.move_pages(w["pid"], w["addr"] + ((k * HOT_MIB) << 20), HOT_MIB << 20, 0)  # one call
                row.seconds.append(time.monotonic() - t0)
                assert self.on_ddr(w, k * HOT_MIB) >= 0.9, "move_pages left the hot range on the CXL node"
        finally:
            self.stop_all()
        return row

    def engine(self, name: str, cxl_node: int) -> Row:
        engine = name.split()[-1]
        row = Row(name)
        daemon = None
        policy: dict[str, Any] = {
            "engine": engine,
            "interval": "1s",
            "processes": {"manage": [{"cgroup": CGROUP}], "min_rss": "1MiB"},
        }
        try:
            if engine == "numa_balancing":
                policy["hotness"] = {"hot_threshold": 0.25}
            w = self.workload(cxl_node)
            if engine == "numa_balancing" and self.trace:
                self.scans = ScanTrace(w["pid"])
            assert self.on_ddr(w, 0, MIB) == 0, "the workload did not start on the CXL node"
            daemon = labkit.LabDaemon(self.work / name.replace(" ", "-"), policy)
            if self.wait(w, 0, daemon) is None and self.wait(w, 0, daemon) is None:  # start-up under TCG: 2 caps
                row.note = f"the first hot range never reached DDR within {2 * self.cap:g} s"
                return row
            for k in range(1, self.shifts + 1):
                ticks0 = daemon.ticks()
                os.kill(w["pid"], signal.SIGUSR1)
                row.seconds.append(self.wait(w, k * HOT_MIB, daemon))
                row.ticks.append(daemon.ticks() - ticks0)
            row.cold = self.on_ddr(w, MIB - HOT_MIB)
            return row
        finally:
            if daemon is not None:
                daemon.stop()
                daemon.keep_log(f"bench-reaction-{engine}")
            self.stop_all()
            if self.scans:
                self.scans.stop()
                self.scans = None
            labkit.remove_kdamonds()


def run(shifts: int, cap: float, only: list[str], trace: bool = False) -> str:
    labkit.loopback_up()
    cxl_node = min(labkit.dax_target_nodes().values())
    cg_root = Path("/sys/fs/cgroup")
    (cg_root / "cgroup.subtree_control").write_text("+memory")
    (cg_root / CGROUP.strip("/")).mkdir(exist_ok=True)
    saved: dict[str, str] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cxltierd-bench-") as work:
        bench = Bench(shifts, cap, Path(work), trace)
        try:
            bench.knob(NB, "0", saved)
            bench.knob("/proc/sys/vm/compaction_proactiveness", "0", saved)
            for name in ROWS:
                if only and name not in only:
                    continue
                rows.append(bench.floor(cxl_node) if name == "floor" else bench.engine(name, cxl_node))
                print(" | ".join(rows[-1].cells(None)), flush=True)
        finally:
            bench.stop_all()
            for p, v in reversed(list(saved.items())):
                Path(p).write_text(v)
            with contextlib.suppress(OSError):
                (cg_root / CGROUP.strip("/")).rmdir()
    return table(rows, cxl_node, shifts, cap)


def table(rows: list[Row], cxl_node: int, shifts: int, cap: float) -> str:
    """The markdown table of the runs, then one verdict line per engine."""
    floor_row = next((r for r in rows if r.name == "floor" and r.reached()), None)
    floor = statistics.median(floor_row.reached()) if floor_row else None
    head = [
        "mechanism",
        "s to 90% on DDR, each run",
        "median (min-max)",
        "minus the floor: median / worst",
        "ticks: median / worst",
        "never-hot on DDR",
    ]
    lines = [
        f"Reaction to a hot set that moves to fresh pages on the CXL node (node {cxl_node}), kernel "
        f"{os.uname().release}: {MIB} MiB buffer, {HOT_MIB} MiB hot, moved {HOT_MIB} MiB on {shifts} times (one run "
        f"each) once the previous range was on DDR; interval 1 s; cap {cap:g} s per run",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r.cells(floor)) + " |" for r in rows]
    verdicts = [v for r in rows if (v := r.verdict(floor))]
    if verdicts:
        lines += ["", "Issue 17's bound: " + "; ".join(verdicts) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shifts", type=int, default=5, help="runs: how many times the hot range moves per row")
    ap.add_argument("--cap", type=float, default=60.0, help="seconds per run before 'not reached'")
    ap.add_argument("--only", nargs="*", default=[], choices=ROWS, help="run only these rows")
    ap.add_argument("--trace", action="store_true", help="print the kernel's NUMA-balancing counters after shifts")
    args = ap.parse_args(argv)
    if not 1 <= args.shifts <= MIB // HOT_MIB - 2:
        ap.error(f"--shifts must be in [1, {MIB // HOT_MIB - 2}]: the last {HOT_MIB} MiB stay never hot")
    publish(run(args.shifts, args.cap, args.only, args.trace), "lab_reaction")
    return 0


@pytest.mark.parametrize("engine", ["all", "move_pages", "damos", "numa_balancing"])
def test_lab_reaction(engine: str, request: pytest.FixtureRequest) -> None:
    """Every row; with `-k ENGINE` the floor and that engine's row only."""
    if engine == "all":
        in_guest("lab_reaction.py", main)
        return
    if not request.config.getoption("keyword"):
        pytest.skip(f"one engine's row: run with -k {engine}")
    args = ["--only", "floor", f"cxltierd {engine}"] + (["--trace"] if engine == "numa_balancing" else [])
    in_guest("lab_reaction.py", lambda argv: main(args))


if __name__ == "__main__":
    sys.exit(main())
