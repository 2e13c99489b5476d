#!/usr/bin/env python3
"""Time to drain N MiB off the CXL node: cxltierd's drain step vs `migratepages` vs the kernel offlining the node's
memory blocks, in the QEMU lab guest, same run.

    bash tests/lab/run.sh benchmarks/lab_drain.py -q -s -p no:hypothesispytest   # from the host, as root
    python benchmarks/lab_drain.py [--mib 32] [--rounds 3]                       # inside the guest

Each round starts three workloads (tests/lab/workload.py, N MiB bound to the CXL node then unbound, never touched
again) and empties the node three ways, timing each by the wall clock: cxltierd's drain step (what the daemon does
for a failing node: numa_maps of every process, the planner of cxltierd/ras/drain.py with the healthy nodes' room,
then one migrate_pages(2) per process), numactl's `migratepages PID 4 0` for one process, and writing `offline` to
each of the node's memory blocks (the kernel migrates everything off, then the blocks are onlined again). Pages moved
are checked by move_pages(2) queries. The median over --rounds is reported, with ratios to the two peers. Writes the
table to $CXLTIERD_LAB_SHARE/benchmarks/lab_drain.md. Time from injection to the first action is not measured here.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # cxltierd from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/lab"))  # the lab's helpers: labkit.py

from labkit import CxlHotplug, dax_target_nodes, in_guest, pages_on_nodes, publish, start_workload

from cxltierd.failover import ProcessMover
from cxltierd.hostfs import HostFS
from cxltierd.ras import drain
from cxltierd.ras.drain import Target
from cxltierd.ras.policy import RasPolicy

MiB = 1 << 20


def node_room() -> list[Target]:
    """Nodes 0 and 1 as drain targets (MemFree and MemTotal from their meminfo)."""
    out = []
    for n in (0, 1):
        info = {}
        for line in Path(f"/sys/devices/system/node/node{n}/meminfo").read_text().splitlines():
            parts = line.split()
            info[parts[2].rstrip(":")] = int(parts[3]) * 1024
        out.append(Target(n, 0, info["MemFree"], info["MemTotal"]))
    return out


def cxltierd_drain(node: int) -> float:
    """One unlimited drain step of `node` as the daemon takes it; seconds."""
    mover = ProcessMover(HostFS("/"))
    policy = RasPolicy(drain_rate=1 << 40, reserve_bytes=32 * MiB, reserve_percent=0)
    t0 = time.perf_counter()
    residents = mover.residents(node, None)  # type: ignore[arg-type]  # the host mover does not read the loop
    step = drain.plan_step(drain.start(node, 0.0), residents, node_room(), policy, 0.0, mover.granularity)
    mover.move(step.moves, None)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def migratepages(pid: int, node: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["migratepages", str(pid), str(node), "0"], check=True, timeout=600)
    return time.perf_counter() - t0


def offline(hotplug: CxlHotplug) -> float:
    t0 = time.perf_counter()
    for b in hotplug.blocks:
        Path(f"/sys/devices/system/memory/{b}/state").write_text("offline")
    seconds = time.perf_counter() - t0
    for b in hotplug.blocks:
        Path(f"/sys/devices/system/memory/{b}/state").write_text("online_movable")
    return seconds


def run(mib: int, rounds: int) -> str:
    nodes = dax_target_nodes()
    dax, node = min(nodes.items(), key=lambda kv: kv[1])
    hotplug = CxlHotplug(dax, node)
    times: dict[str, list[float]] = {"cxltierd drain": [], "migratepages": [], "offline blocks": []}
    for _ in range(rounds):
        for name in times:
            proc, w = start_workload(["--node", str(node), "--mib", str(mib), "--unbind"])
            try:
                assert pages_on_nodes(w["pid"], w["addr"], w["length"]) == {node: w["length"] // w["page_size"]}
                if name == "cxltierd drain":
                    seconds = cxltierd_drain(node)
                elif name == "migratepages":
                    seconds = migratepages(w["pid"], node)
                else:
                    seconds = offline(hotplug)
                left = pages_on_nodes(w["pid"], w["addr"], w["length"]).get(node, 0)
                assert left == 0, f"{name}: {left} pages still on node {node}"
                times[name].append(seconds)
            finally:
                proc.kill()
                proc.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"Drain of {mib} MiB off CXL node {node} (median of {rounds} rounds, wall clock)",
        "",
        "| way | seconds (median) | MiB/s | spread (min..max s) | cxltierd / this |",
        "|---|---|---|---|---|",
    ]
    for k, v in times.items():
        lines.append(
            f"| {k} | {med[k]:.2f} | {mib / med[k]:.1f} | {min(v):.2f}..{max(v):.2f} | "
            f"{med['cxltierd drain'] / med[k]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    publish(run(a.mib, a.rounds), "lab_drain")
    return 0


def test_lab_drain() -> None:
    in_guest("lab_drain.py", main)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
