#!/usr/bin/env python3
"""Placement quality: cxltierd's policy against the baselines and an oracle, on every shipped scenario.

    .venv/bin/python benchmarks/placement.py [--duration S] [--interval S] [--seed N] [--jobs 2] [--json FILE]

Every placer runs each scenario from the same seed on a fresh simulated memory system (cxltierd.emulate.simulate),
with the same rate limit and watermarks: cxltierd (the default policy), static (first touch), promote-on-access (the
kernel's NUMA-balancing tiering idea), age (memtierd's age policy idea) and oracle (knows each region's access rate
over the next interval). Printed per scenario: the share of all accesses served by the fastest tier for each placer,
cxltierd's share as a fraction of the oracle's, GiB migrated and ping-pong moves. Targets (issue 3): cxltierd >= 0.95
of the oracle's share on average, never more than 1 point below the best baseline, migration volume at most 2x the
oracle's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxltierd.emulate import scenario_names
from cxltierd.emulate.simulate import PLACERS, run

BASELINES = ("static", "promote-on-access", "age")
GiB = 1 << 30


def one(job: tuple[str, str, float | None, int | None, float | None]) -> tuple[str, str, float, int, int, float]:
    scenario, placer, duration, seed, interval = job
    t = time.perf_counter()
    r = run(scenario, placer, seed=seed, duration=duration, interval=interval)
    return scenario, placer, r.share, r.migrated_bytes, r.ping_pong, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=None, help="simulated seconds [each scenario's own]")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--interval", type=float, default=None, help="loop interval, seconds [each scenario's own]")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = ap.parse_args()
    scenarios = scenario_names()
    jobs = [(s, p, args.duration, args.seed, args.interval) for s in scenarios for p in PLACERS]
    with Pool(args.jobs) as pool:
        rows = pool.map(one, jobs)
    res = {(s, p): (share, moved, pp) for s, p, share, moved, pp, _ in rows}

    head = " ".join(f"{p:>17}" for p in PLACERS)
    print("fast-tier access share (fraction of all accesses served by the fastest tier)\n")
    print(
        f"{'scenario':<16} {head}  {'vs oracle':>9} {'vs best baseline':>16}  {'GiB moved (cxltierd/oracle)':>27}  {'ping-pong':>9}"
    )
    ratios, gaps, volumes = [], [], []
    for s in scenarios:
        shares = {p: res[(s, p)][0] for p in PLACERS}
        ratio = shares["cxltierd"] / shares["oracle"]
        best = max(shares[b] for b in BASELINES)
        gap = 100 * (shares["cxltierd"] - best)
        moved, oracle_moved = res[(s, "cxltierd")][1], res[(s, "oracle")][1]
        volume = moved / oracle_moved if oracle_moved else float("inf")
        ratios.append(ratio)
        gaps.append(gap)
        volumes.append(volume)
        cells = " ".join(f"{100 * shares[p]:>16.1f}%" for p in PLACERS)
        print(
            f"{s:<16} {cells}  {ratio:>9.3f} {gap:>+15.1f}p  {moved / GiB:>10.1f} / {oracle_moved / GiB:<6.1f} ({volume:.1f}x)"
            f"  {res[(s, 'cxltierd')][2]:>9}"
        )
    avg = sum(ratios) / len(ratios)
    print(f"\naverage share vs oracle: {avg:.3f} (target >= 0.95)")
    print(f"worst gap to the best baseline: {min(gaps):+.1f} points (target >= -1)")
    print(f"largest migration volume vs oracle: {max(volumes):.1f}x (target <= 2x)")
    met = avg >= 0.95 and min(gaps) >= -1 and max(volumes) <= 2
    print(f"targets {'met' if met else 'MISSED'}")
    print("\nping-pong (moves sent back within two cooldowns): "
          + ", ".join(f"{p} {sum(res[(s, p)][2] for s in scenarios)}" for p in PLACERS))  # fmt: skip
    print("wall time per run: " + ", ".join(f"{s}/{p} {t:.0f}s" for s, p, *_, t in rows if p == "cxltierd"))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    dict(zip(("scenario", "placer", "share", "migrated_bytes", "ping_pong", "seconds"), r, strict=True))
                    for r in rows
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
