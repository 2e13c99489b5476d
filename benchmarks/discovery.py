#!/usr/bin/env python3
"""Discovery + classification time on generated hosts of growing size, next to the raw cost of reading the tree.

    .venv/bin/python benchmarks/discovery.py [--repeat 5]

Each host is generated with fixtures/make_hosts.py (up to 64 memdevs, 32 regions, 8 nodes, 16384 memory blocks).
For each size it prints the best of --repeat runs of discover() and classify(), and, measured in the same run on the
same tree, a peer: the time to merely read every file discovery reads (the floor any tool pays; a file cache warm for
both). The ratio to the peer and the time per memory block show the growth. Target: the largest host under 100 ms,
growth no worse than linear.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "fixtures"))

from make_hosts import scaled_host, write_host  # noqa: E402

from cxltierd.discovery import discover  # noqa: E402
from cxltierd.hostfs import HostFS  # noqa: E402
from cxltierd.topology import classify  # noqa: E402

SIZES = [(4, 2, 3, 1024), (16, 8, 4, 4096), (32, 16, 6, 8192), (64, 32, 8, 16384)]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_tree(root: Path) -> int:
    """The peer: list and read what discovery needs (bus devices, node dirs, every memory block directory)."""
    n = 0
    for top in ("sys/bus/cxl/devices", "sys/bus/dax/devices"):
        for link in os.scandir(root / top):
            for e in os.scandir(os.path.realpath(link.path)):
                if e.is_file(follow_symlinks=False):
                    with open(e.path, "rb") as f:
                        f.read()
                    n += 1
    node = root / "sys/devices/system/node"
    for d in os.scandir(node):
        if d.name.startswith("node") and d.is_dir():
            for name in ("cpulist", "meminfo", "distance"):
                with open(os.path.join(d.path, name), "rb") as f:
                    f.read()
            n += len(os.listdir(d.path))
    n += len(os.listdir(root / "sys/devices/system/memory"))
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'memdevs':>7} {'regions':>7} {'nodes':>5} {'blocks':>6}  {'discover':>9} {'classify':>9}"
          f" {'total':>9}  {'peer read':>9} {'ratio':>6}  {'us/block':>8}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxltierd-bench-") as tmp:
        for memdevs, regions, nodes, blocks in SIZES:
            root = write_host(scaled_host(memdevs, regions, nodes, blocks), Path(tmp) / f"h{blocks}")
            fs = HostFS(root)
            facts = discover(fs)
            assert not facts.warnings, facts.warnings[:3]
            assert len(facts.memdevs) == memdevs and len(facts.regions) == regions, (
                len(facts.memdevs),
                len(facts.regions),
            )
            t_disc = best(lambda fs=fs: discover(fs), args.repeat)
            t_cls = best(lambda facts=facts: classify(facts), args.repeat)
            t_peer = best(lambda root=root: read_tree(root), args.repeat)
            total = t_disc + t_cls
            rows.append((blocks, total))
            print(f"{memdevs:>7} {regions:>7} {nodes:>5} {len(facts.blocks):>6}  {1e3 * t_disc:>7.1f}ms {1e3 * t_cls:>7.2f}ms"
                  f" {1e3 * total:>7.1f}ms  {1e3 * t_peer:>7.1f}ms {total / t_peer:>6.2f}  {1e6 * total / blocks:>8.2f}")  # fmt: skip
    (b0, t0), (b1, t1) = rows[0], rows[-1]
    growth = (t1 / t0) / (b1 / b0)
    print(f"\nlargest host: {1e3 * t1:.1f} ms (target < 100 ms); time grew {t1 / t0:.1f}x for {b1 / b0:.0f}x the blocks "
          f"(growth/linear = {growth:.2f}; <= 1 is linear or better)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
