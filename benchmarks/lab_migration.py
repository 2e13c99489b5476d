#!/usr/bin/env python3
"""Pages per second moved by cxltierd's move_pages engine vs numactl's `migratepages`, in the QEMU lab guest.

    bash tests/lab/run.sh benchmarks/lab_migration.py -q -s -p no:hypothesispytest   # from the host, as root
    python benchmarks/lab_migration.py [--mib 256] [--rounds 3]                       # inside the guest

Two workload processes (tests/lab/workload.py: an anonymous buffer bound to node 0, MADV_NOHUGEPAGE, so 4 KiB
pages) are started side by side. One is moved back and forth between plain-RAM nodes 0 and 1 by
MovePagesEngine.apply() on a plan of 2 MiB regions covering its buffer (what the daemon's loop hands it: one query
call and one batched move call per process); the other by `migratepages PID FROM TO` (numactl, the migrate_pages(2)
syscall: the kernel walks the whole process, interpreter included). A third row moves the buffer with
tests/lab/labkit.py's move_pages helper (batches of 65536 pages, no query, but its page list is built page by
page in Python): it shows what per-page Python work costs next to the kernel's migration. Pages are counted by the
kernel (pgmigrate_success deltas; NUMA balancing and proactive compaction are off), time by the wall clock around
the call; the median over --rounds moves in each direction is reported. Target: engine / migratepages >= 0.9.
The table is printed and written to $CXLTIERD_LAB_SHARE/benchmarks/lab_migration.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # cxltierd from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/lab"))  # the lab's helpers: labkit.py

from labkit import in_guest, move_pages, pages_on_nodes, publish, start_workload, vmstat

from cxltierd.engines.move_pages import MovePagesEngine
from cxltierd.model import Move, Plan

REGION = 2 << 20
KNOBS = {"/proc/sys/kernel/numa_balancing": "0", "/proc/sys/vm/compaction_proactiveness": "0"}


def timed(fn: Callable[[], Any], vmstat: Callable[[], dict[str, int]]) -> tuple[int, float, Any]:
    """(pages the kernel migrated, seconds, what fn returned) for one call."""
    before = vmstat()["pgmigrate_success"]
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    return vmstat()["pgmigrate_success"] - before, seconds, value


def run(mib: int, rounds: int) -> str:
    saved = {p: Path(p).read_text().strip() for p in KNOBS}
    procs: list[subprocess.Popen[str]] = []
    try:
        for p, v in KNOBS.items():
            Path(p).write_text(v)
        a_proc, a = start_workload(["--node", "0", "--mib", str(mib)])
        b_proc, b = start_workload(["--node", "0", "--mib", str(mib)])
        procs += [a_proc, b_proc]
        pages = a["length"] // a["page_size"]
        engine = MovePagesEngine()

        def plan(src: int, dst: int) -> Plan:
            moves = tuple(
                Move(a["pid"], a["addr"] + off, REGION, src, dst, "bench") for off in range(0, a["length"], REGION)
            )
            return Plan(moves=moves)

        results: dict[str, list[tuple[int, float]]] = {"engine": [], "migratepages": [], "move_pages(2)": []}
        reported: list[int] = []
        for r in range(2 * rounds):
            src, dst = (0, 1) if r % 2 == 0 else (1, 0)
            n, secs, outcome = timed(partial(engine.apply, plan(src, dst), 0), vmstat)
            results["engine"].append((n, secs))
            reported.append(sum(t.pages for t in outcome.transfers))
            assert pages_on_nodes(a["pid"], a["addr"], a["length"]) == {dst: pages}
            cmd = ["migratepages", str(b["pid"]), str(src), str(dst)]
            n, secs, _ = timed(partial(subprocess.run, cmd, check=True), vmstat)
            results["migratepages"].append((n, secs))
            assert pages_on_nodes(b["pid"], b["addr"], b["length"]) == {dst: pages}
        for r in range(2 * rounds):  # the floor: the buffer alone, no query, one node for all pages
            dst = 1 if r % 2 == 0 else 0
            n, secs, _ = timed(partial(move_pages, a["pid"], a["addr"], a["length"], dst), vmstat)
            results["move_pages(2)"].append((n, secs))
        assert reported == [n for n, _ in results["engine"]], (reported, results["engine"])
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for p, v in saved.items():
            Path(p).write_text(v)

    rate = {k: statistics.median(n / s for n, s in v) for k, v in results.items()}
    lines = [
        f"Migration throughput, {mib} MiB buffer, 4 KiB pages, nodes 0 <-> 1 (plain RAM), median of {2 * rounds} moves",
        "",
        "| mover | pages per move (kernel) | seconds per move | pages/s | vs migratepages |",
        "|---|---|---|---|---|",
    ]
    names = {
        "engine": "cxltierd MovePagesEngine.apply (query + move)",
        "migratepages": "numactl migratepages (migrate_pages(2), whole process)",
        "move_pages(2)": "move_pages(2) alone, no query (lab helper: page list built page by page in Python)",
    }
    for k in ("engine", "migratepages", "move_pages(2)"):
        runs = results[k]
        lines.append(
            f"| {names[k]} | {statistics.median(n for n, _ in runs):.0f} | {statistics.median(t for _, t in runs):.2f} "
            f"| {rate[k]:,.0f} | {rate[k] / rate['migratepages']:.2f} |"
        )
    lines += ["", f"engine / migratepages = {rate['engine'] / rate['migratepages']:.2f} (target >= 0.9)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="moves in each direction per mover")
    args = ap.parse_args(argv)
    publish(run(args.mib, args.rounds), "lab_migration")
    return 0


def test_lab_migration() -> None:
    in_guest("lab_migration.py", main)


if __name__ == "__main__":
    sys.exit(main())
