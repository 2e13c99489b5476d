#!/usr/bin/env python3
"""Time until 90% of a hot set that starts on the CXL node sits on DDR: cxltierd's engines vs the kernel alone.

    bash tests/lab/run.sh benchmarks/lab_promotion.py -q -s -p no:hypothesispytest   # from the host, as root
    python benchmarks/lab_promotion.py [--cap 120] [--only ROW ...]                    # inside the guest

Every row starts the same workload afresh (tests/lab/workload.py: 64 MiB on the CXL node, the first 16 MiB
re-touched every pass, pinned to CPU 1 with a context-switching companion, its MPOL_BIND dropped once the buffer
is on the CXL node so that NUMA balancing may move it, in the cgroup /cxltierd-bench), then switches one mechanism
on and polls where the hot pages are (move_pages(2) queries) once a second, up to --cap seconds:

  nothing                  kernel.numa_balancing=0, no daemon (the floor: nothing moves)
  kernel NB tiering        numa_balancing=2 written by this script, every other kernel default (no cxltierd)
  kernel NB tiering, lab   numa_balancing=2 with debugfs scan_delay_ms and scan_period_min_ms lowered to 100 ms
  kernel NB tiering, lab, 4000 ms   the same, and hot_threshold_ms 4000: what the cxltierd row below writes
  cxltierd numa_balancing  the daemon's NUMA-balancing engine (same scan tunables as the row above; policy
                           hot_threshold 0.25/s, which the engine writes as hot_threshold_ms 4000)
  cxltierd move_pages      the daemon: DAMON vaddr tracking + batched move_pages(2), default hotness settings
  cxltierd damos           the daemon: DAMOS migrate_hot on paddr, default hotness settings

The daemon rows run `cxltierd run --backend host` (interval 1 s, processes.manage: the bench cgroup); their clock
starts when the daemon is launched, so the daemon's own start-up (Python over 9p under TCG, about 10-15 s) is
included; the start-up is also shown on its own. Cold pages promoted are shown as a share of the cold 48 MiB.
The table is printed and written to $CXLTIERD_LAB_SHARE/benchmarks/lab_promotion.md.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/lab"))  # the lab's helpers: labkit.py

import labkit
from labkit import in_guest, publish, start_workload

MIB, HOT_MIB, CPU = 64, 16, 1
CGROUP = "/cxltierd-bench"
DDR = (0, 1)
NB = "/proc/sys/kernel/numa_balancing"
DEBUGFS = "/sys/kernel/debug/sched/numa_balancing"
LAB_SCAN = {f"{DEBUGFS}/scan_delay_ms": "100", f"{DEBUGFS}/scan_period_min_ms": "100"}
ROWS = (
    "nothing",
    "kernel NB tiering",
    "kernel NB tiering, lab",
    "kernel NB tiering, lab, 4000 ms",
    "cxltierd numa_balancing",
    "cxltierd move_pages",
    "cxltierd damos",
)


@dataclass
class Row:
    name: str
    t90: float | None  # seconds from switching the mechanism on until 90% of the hot pages were on DDR
    start_up: float | None  # daemon rows: seconds until the first tick
    hot: float  # share of the hot pages on DDR at the end
    cold: float  # share of the cold pages on DDR at the end

    def cells(self, cap: float) -> list[str]:
        t90 = f"{self.t90:.1f}" if self.t90 is not None else f"not reached ({100 * self.hot:.0f}% after {cap:g} s)"
        after = "" if self.start_up is None or self.t90 is None else f"{self.t90 - self.start_up:.1f}"
        start = "" if self.start_up is None else f"{self.start_up:.1f}"
        return [self.name, t90, start, after, f"{100 * self.hot:.0f}%", f"{100 * self.cold:.1f}%"]


class Bench:
    def __init__(self, kit: ModuleType, cap: float, work: Path) -> None:
        self.kit = kit
        self.cap = cap
        self.work = work
        self.procs: list[subprocess.Popen[str]] = []

    def knob(self, path: str, value: str, saved: dict[str, str]) -> None:
        saved.setdefault(path, Path(path).read_text().strip())
        Path(path).write_text(value)

    def workload(self, node: int) -> dict[str, Any]:
        self.procs.append(subprocess.Popen([sys.executable, "-c", self.kit.COMPANION.format(cpu=CPU)], text=True))
        args = ["--node", str(node), "--mib", str(MIB), "--hot-mib", str(HOT_MIB), "--cpu", str(CPU)]
        proc, info = start_workload([*args, "--cgroup", CGROUP, "--unbind"])
        self.procs.append(proc)
        return info

    def shares(self, w: dict[str, Any]) -> tuple[float, float]:
        page = w["page_size"]
        hot = self.kit.pages_on_nodes(w["pid"], w["addr"], w["hot_length"])
        cold = self.kit.pages_on_nodes(w["pid"], w["addr"] + w["hot_length"], w["length"] - w["hot_length"])
        on = (sum(v for n, v in c.items() if n in DDR) for c in (hot, cold))
        return next(on) / (w["hot_length"] // page), next(on) / ((w["length"] - w["hot_length"]) // page)

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self.procs = []

    def row(self, name: str, cxl_node: int) -> Row:
        saved: dict[str, str] = {}
        daemon = None
        try:
            self.knob(NB, "0", saved)
            self.knob("/proc/sys/vm/compaction_proactiveness", "0", saved)
            w = self.workload(cxl_node)
            hot, cold = self.shares(w)
            assert hot == 0 and cold == 0, "the workload did not start on the CXL node"
            started = time.monotonic()
            if name.startswith("kernel"):
                if ", lab" in name:
                    for p, v in LAB_SCAN.items():
                        self.knob(p, v, saved)
                if name.endswith("4000 ms"):
                    self.knob(f"{DEBUGFS}/hot_threshold_ms", "4000", saved)
                started = time.monotonic()
                self.knob(NB, "2", saved)
            elif name.startswith("cxltierd"):
                engine = name.split()[1]
                policy: dict[str, Any] = {
                    "engine": engine,
                    "interval": "1s",
                    "processes": {"manage": [{"cgroup": CGROUP}], "min_rss": "1MiB"},
                }
                if engine == "numa_balancing":
                    for p, v in LAB_SCAN.items():
                        self.knob(p, v, saved)
                    policy["hotness"] = {"hot_threshold": 0.25}
                started = time.monotonic()
                daemon = self.kit.LabDaemon(self.work / name.replace(" ", "-"), policy)
            t90 = start_up = None
            while time.monotonic() - started < self.cap:
                if daemon is not None:
                    daemon.alive()
                    if start_up is None and daemon.ticks() >= 1:
                        start_up = time.monotonic() - started
                hot, cold = self.shares(w)
                if hot >= 0.9:
                    t90 = time.monotonic() - started
                    break
                time.sleep(1.0)
            hot, cold = self.shares(w)
            return Row(name, t90, start_up, hot, cold)
        finally:
            if daemon is not None:
                daemon.stop()
                daemon.keep_log(f"bench-{name.replace(' ', '-')}")
            self.stop_all()
            for p, v in reversed(list(saved.items())):
                Path(p).write_text(v)
            self.kit.remove_kdamonds()


def run(cap: float, only: list[str]) -> str:
    labkit.loopback_up()
    cxl_node = min(labkit.dax_target_nodes().values())
    cg_root = Path("/sys/fs/cgroup")
    (cg_root / "cgroup.subtree_control").write_text("+memory")
    (cg_root / CGROUP.strip("/")).mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxltierd-bench-") as work:
        bench = Bench(labkit, cap, Path(work))
        try:
            for name in ROWS:
                if not only or name in only:
                    rows.append(bench.row(name, cxl_node))
                    print(" | ".join(rows[-1].cells(cap)), flush=True)
        finally:
            bench.stop_all()
            with contextlib.suppress(OSError):
                (cg_root / CGROUP.strip("/")).rmdir()
    head = ["mechanism", "s to 90% hot on DDR", "daemon start-up s", "s after first tick", "hot on DDR", "cold on DDR"]
    lines = [
        f"Promotion of a hot set from the CXL node (node {cxl_node}) to DDR: 64 MiB buffer, first 16 MiB hot, "
        f"cap {cap:g} s",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r.cells(cap)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cap", type=float, default=120.0, help="seconds per row before 'not reached'")
    ap.add_argument("--only", nargs="*", default=[], choices=ROWS, help="run only these rows")
    args = ap.parse_args(argv)
    publish(run(args.cap, args.only), "lab_promotion")
    return 0


def test_lab_promotion() -> None:
    in_guest("lab_promotion.py", main)


if __name__ == "__main__":
    sys.exit(main())
