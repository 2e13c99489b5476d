#!/usr/bin/env python3
"""The daemon's own cost per tick against managed memory and process count, next to its budget.

    .venv/bin/python benchmarks/overhead.py [--ticks 5] [--sizes 1GiB,64GiB,1TiB] [--procs 1,100,1000]
                                            [--max-chunks 0,8192] [--markdown]

For each (managed memory, processes, damon.max_chunks) the daemon's pipeline runs on a tracker that hands it a ready
sample: one RegionHeat per chunk, as the move_pages engine's tracker cuts them (2 MiB, doubled while there would be
more than max_chunks; 0 keeps 2 MiB at any size), heat drawn from a Zipf-like law, 20% of the memory on the CXL
node, and moves applied at once. So what is measured is cxltierd's own work per tick (smoothing,
the decision, recording, the snapshot), not the kernel's or a simulator's. Per tick: CPU seconds (process time,
mean of --ticks after one warm-up tick) and that as a share of one core at the default 5 s interval; the
process's RSS (psutil) after the last tick, with the RSS of the same process before the sample existed as the
baseline. Target (issue 10): under 1% of one core and under 200 MiB at 1 TiB / 1000 processes; each row says
whether it is met. Exits 0 always: this is a measurement, the README quotes it.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from dataclasses import dataclass

import psutil

from cxltierd.engines.base import Engines
from cxltierd.engines.damon_tracker import chunk_size
from cxltierd.loop import Loop
from cxltierd.model import Gates, Outcome, Plan, Process, RegionHeat, Sample, Transfer
from cxltierd.policy.schema import Policy
from cxltierd.service.publish import ServiceState, snapshot
from cxltierd.topology import Node, Tier, Topology
from cxltierd.units import format_size, parse_size

REGION = 2 << 20
INTERVAL = 5.0
CPU_BUDGET = 0.01  # share of one core
RSS_BUDGET = 200 << 20


class Synthetic:
    """Tracker and migrator over a fixed set of regions: heat jitters a little every tick, moves land at once."""

    name = "synthetic"
    kernel_executed = False

    def __init__(self, memory: int, procs: int, max_chunks: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.chunk = chunk = chunk_size(memory, REGION, max_chunks, REGION)
        n = memory // chunk
        per = max(1, n // procs)
        self.regions = []
        for i in range(n):
            pid = 1000 + min(i // per, procs - 1)
            heat = 1000.0 / (1 + rng.random() * (i % per + 1)) ** 1.2
            node = 4 if rng.random() < 0.2 else i % 2
            self.regions.append([pid, 0x7F0000000000 + (i % per) * chunk + (i // per) * (1 << 40), node, heat])
        self.where = {(r[0], r[1]): r for r in self.regions}
        self.total = {0: memory, 1: memory, 4: memory}
        self.procs = {1000 + p: Process(1000 + p, f"app{p}") for p in range(procs)}
        self.rng = rng

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Nothing to program."""

    def gate(self, gates: Gates) -> None:
        """Not kernel-executed."""

    def sample(self, now: float) -> Sample:
        """Every region with its heat, jittered by up to 5%."""
        used = {0: 0, 1: 0, 4: 0}
        out = []
        for r in self.regions:
            r[3] *= 0.95 + 0.1 * self.rng.random()
            used[r[2]] += self.chunk
            out.append(RegionHeat(r[0], r[1], self.chunk, r[2], r[3]))
        free = {n: self.total[n] - used[n] for n in used}
        return Sample(tuple(out), free, dict(self.total), self.procs, resolution=10.0)

    def apply(self, plan: Plan, now: float) -> Outcome:
        """Every move lands at once."""
        for m in plan.moves:
            self.where[(m.pid, m.start)][2] = m.dst
        return Outcome(
            transfers=tuple(Transfer(m.src, m.dst, m.size, m.size // 4096) for m in plan.moves),
            moved=tuple(m.key for m in plan.moves),
        )

    def stop(self) -> None:
        """Nothing to stop."""


TOPO = Topology(
    nodes=(Node(0, "ddr", "t", cpus=(0,)), Node(1, "ddr", "t", cpus=(1,)), Node(4, "cxl", "t")),
    tiers=(Tier("ddr", 0, (0, 1)), Tier("cxl", 1, (4,))),
)


@dataclass
class Row:
    memory: int
    procs: int
    max_chunks: int
    chunk: int
    regions: int
    cpu_per_tick: float
    rss: int
    base_rss: int

    @property
    def core_share(self) -> float:
        return self.cpu_per_tick / INTERVAL

    @property
    def meets(self) -> bool:
        return self.core_share < CPU_BUDGET and self.rss < RSS_BUDGET


def measure(memory: int, procs: int, max_chunks: int, ticks: int) -> Row:
    gc.collect()
    me = psutil.Process()
    base = me.memory_info().rss
    engine = Synthetic(memory, procs, max_chunks)
    loop = Loop(TOPO, Engines("synthetic", engine, engine), Policy(interval=INTERVAL))
    svc = ServiceState(backend="emulated", started=0.0)
    loop.tick(0.0)  # warm-up: the first tick only observes
    snapshot(loop, svc, {})
    t0 = time.process_time()
    for i in range(1, ticks + 1):
        loop.tick(i * INTERVAL)
        snapshot(loop, svc, {})
    cpu = (time.process_time() - t0) / ticks
    return Row(memory, procs, max_chunks, engine.chunk, len(engine.regions), cpu, me.memory_info().rss, base)


def markdown(rows: list[Row]) -> str:
    lines = [
        "| managed memory | processes | max_chunks | chunk | regions | CPU per tick | share of one core (5 s) | RSS | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {format_size(r.memory)} | {r.procs} | {r.max_chunks} | {format_size(r.chunk)} | {r.regions} |"
            f" {r.cpu_per_tick * 1000:.1f} ms |"
            f" {100 * r.core_share:.2f}% | {r.rss >> 20} MiB | {'yes' if r.meets else 'no'} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--sizes", default="1GiB,16GiB,256GiB,1TiB")
    ap.add_argument("--procs", default="1,100,1000")
    ap.add_argument("--max-chunks", default="0,8192", help="damon.max_chunks values (0: 2 MiB chunks at any size)")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    rows = []
    for size in a.sizes.split(","):
        for procs, limit in ((int(p), int(m)) for p in a.procs.split(",") for m in a.max_chunks.split(",")):
            row = measure(parse_size(size), procs, limit, a.ticks)
            rows.append(row)
            if not a.markdown:
                print(
                    f"{format_size(row.memory):>7} {row.procs:>5} procs max_chunks {limit:>5}: "
                    f"{row.regions:>7} regions of {format_size(row.chunk)}: "
                    f"{row.cpu_per_tick * 1000:8.1f} ms CPU/tick = {100 * row.core_share:6.2f}% of a core "
                    f"(budget {100 * CPU_BUDGET:g}%), RSS {row.rss >> 20} MiB (budget {RSS_BUDGET >> 20}, "
                    f"{row.base_rss >> 20} before the sample) {'met' if row.meets else 'MISSED'}",
                    flush=True,
                )
    if a.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
