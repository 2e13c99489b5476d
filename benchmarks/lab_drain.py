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
table to $CXLTIERD_LAB_SHARE/benchmarks/lab_drain.md.

Reaction (`--reaction`, pytest's test_lab_drain_reaction): time from an injected uncorrectable media error to the
first action, with the daemon (`cxltierd run --backend host`, 1 s tick) running on the real kernel and a 16 MiB
workload on the CXL node. Each round injects `cxl-inject-general-media-event` (log failure) through the QMP relay,
then polls, every 20 ms, the daemon's log (its "RAS: node N is failing" line), its control socket (`status`, whose
snapshot, like /metrics', is taken at the end of a tick: the node reported failing) and move_pages(2) queries of the
workload's buffer (the first page off the node); then waits for the drain to finish and ends it with
`undrain` for the next round, all in one boot. Times count from QEMU's QMP reply (the event record is queued and
the device's interrupt raised); the relay's round trip is shown apart. Medians and min..max over the rounds, and
each median over the measured tick period. Writes $CXLTIERD_LAB_SHARE/benchmarks/lab_drain_reaction.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # cxltierd from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/lab"))  # the lab's helpers: labkit.py

from labkit import (
    CXL_DEVICE,
    NB_KNOBS,
    CxlHotplug,
    LabDaemon,
    dax_target_nodes,
    in_guest,
    loopback_up,
    pages_on_nodes,
    publish,
    qmp,
    start_workload,
)

from cxltierd.failover import ProcessMover
from cxltierd.hostfs import HostFS
from cxltierd.ras import drain
from cxltierd.ras.drain import Target
from cxltierd.ras.policy import RasPolicy
from cxltierd.service.control import request

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


TICK = 1.0  # the daemon's interval in the reaction rounds, seconds
REACTION_POLICY = {
    "interval": f"{TICK:g}s",
    "engine": "move_pages",
    "hotness": {"hot_threshold": 1e9},  # nothing is hot: only the drain moves the buffer
    "ras": {
        "poison_poll": "1h",
        "health_poll": "1h",
        "drain": {"rate": "1GiB", "reserve": "32MiB", "reserve_percent": 0},
    },
}
MEDIA_ERROR = {"log": "failure", "flags": 1, "dpa": 0x1000, "descriptor": 3, "type": 3, "transaction-type": 192}


def node_state(d: LabDaemon, node: int) -> str:
    reply = request(str(d.socket), "status", timeout=30)
    ras = reply.get("status", {}).get("ras") or {}
    return str(ras.get("nodes", {}).get(str(node), ""))


def wait(what: str, d: LabDaemon, predicate: Any, timeout: float = 120.0, poll: float = 0.02) -> float:
    """perf_counter() when predicate() first holds, polled every `poll` s."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        d.alive()
        assert time.perf_counter() < deadline, f"timed out waiting for {what}:\n{d.tail()}"
        time.sleep(poll)
    return time.perf_counter()


def reaction_round(d: LabDaemon, node: int, mib: int) -> tuple[float, float, float, float]:
    """One injection: (relay round trip, reply -> the daemon logs the node failing, -> status reports it failing,
    -> first page off the node), seconds."""
    proc, w = start_workload(["--node", str(node), "--mib", str(mib), "--unbind"])
    try:
        pages = w["length"] // w["page_size"]
        assert pages_on_nodes(w["pid"], w["addr"], w["length"]) == {node: pages}

        def failing() -> bool:
            return node_state(d, node) == "failing"

        def moved() -> bool:
            return pages_on_nodes(w["pid"], w["addr"], w["length"]).get(node, 0) < pages

        said = f"RAS: node {node} is failing"
        before = d.log().count(said)

        def logged() -> bool:
            return d.log().count(said) > before

        sent = time.perf_counter()
        reply = qmp("cxl-inject-general-media-event", path=CXL_DEVICE, **MEDIA_ERROR)
        t0 = time.perf_counter()
        assert reply == {"return": {}}, reply
        t_log = t_fail = t_move = 0.0
        deadline = t0 + 120
        while not (t_log and t_fail and t_move):  # all polled in one loop, so none waits for another
            d.alive()
            assert time.perf_counter() < deadline, f"no reaction within 120 s:\n{d.tail()}"
            if not t_log and logged():
                t_log = time.perf_counter()
            if not t_fail and failing():
                t_fail = time.perf_counter()
            if not t_move and moved():
                t_move = time.perf_counter()
            time.sleep(0.02)
        wait(
            "the drain to empty the node", d, lambda: pages_on_nodes(w["pid"], w["addr"], w["length"]).get(node, 0) == 0
        )
    finally:
        proc.kill()
        proc.wait()
    assert request(str(d.socket), "undrain", node=node).get("ok")
    wait("the node healthy again", d, lambda: node_state(d, node) == "healthy", poll=0.2)
    return t0 - sent, t_log - t0, t_fail - t0, t_move - t0


def reaction(rounds: int, mib: int = 16) -> str:
    """The reaction rounds in one boot with one daemon; the table."""
    tracing = Path("/sys/kernel/tracing")
    if not (tracing / "instances").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracing)], check=True, timeout=30)
    loopback_up()
    node = min(dax_target_nodes().values())
    saved = {p: Path(p).read_text().strip() for p in NB_KNOBS if Path(p).exists()}
    work = Path(tempfile.mkdtemp(prefix="lab-drain-reaction-"))
    d = LabDaemon(work, REACTION_POLICY)
    rows: list[tuple[float, float, float, float]] = []
    try:
        d.wait_log(r"RAS: reading cxl trace events from /sys/kernel/tracing/instances/cxltierd")
        t_start, tick_start = time.perf_counter(), d.ticks()
        for _ in range(rounds):
            rows.append(reaction_round(d, node, mib))
        period = (time.perf_counter() - t_start) / max(1, d.ticks() - tick_start)
        d.keep_log(f"lab-drain-reaction-{os.uname().release}")
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.stop()
        for p, v in saved.items():
            if Path(p).read_text().strip() != v:
                Path(p).write_text(v)
    relay, said, fail, move = (sorted(r[i] for r in rows) for i in range(4))
    lines = [
        f"Reaction to an injected uncorrectable media error on mem0 (CXL node {node}, {mib} MiB workload), "
        f"{rounds} rounds in one boot; the daemon's tick is {TICK:g} s (measured period {period:.2f} s)",
        "",
        "| from QEMU's reply to | median s | spread (min..max s) | median / tick |",
        "|---|---|---|---|",
        f"| the daemon logs node {node} failing | {statistics.median(said):.2f} | {said[0]:.2f}..{said[-1]:.2f} | "
        f"{statistics.median(said) / TICK:.2f} |",
        f"| node {node} reported failing (status) | {statistics.median(fail):.2f} | {fail[0]:.2f}..{fail[-1]:.2f} | "
        f"{statistics.median(fail) / TICK:.2f} |",
        f"| first page off node {node} (move_pages) | {statistics.median(move):.2f} | {move[0]:.2f}..{move[-1]:.2f} | "
        f"{statistics.median(move) / TICK:.2f} |",
        f"| (the relay's round trip, before the reply) | {statistics.median(relay):.2f} | "
        f"{relay[0]:.2f}..{relay[-1]:.2f} | {statistics.median(relay) / TICK:.2f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reaction", action="store_true", help="time injection -> failing -> first page moved instead")
    a = ap.parse_args(argv)
    if a.reaction:
        publish(reaction(a.rounds if "--rounds" in argv else 7), "lab_drain_reaction")
    else:
        publish(run(a.mib, a.rounds), "lab_drain")
    return 0


def test_lab_drain() -> None:
    in_guest("lab_drain.py", main)


def test_lab_drain_reaction() -> None:
    in_guest("lab_drain.py", lambda argv: main(["--reaction", *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
