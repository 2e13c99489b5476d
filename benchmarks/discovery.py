#!/usr/bin/env python3
"""Discovery + classification time on generated hosts of growing size, next to the raw cost of reading the tree.

    .venv/bin/python benchmarks/discovery.py [--repeat 5] [--markdown]

Each host is generated with fixtures/make_hosts.py (up to 64 memdevs, 32 regions, 8 nodes, 16384 memory blocks).
For each size it prints the best of --repeat runs of discover() and classify(), and, measured in the same run on the
same tree, a peer: the time to merely read every file discovery reads (the floor any tool pays; a file cache warm for
both). The ratio to the peer and the time per memory block show the growth. Target: the largest host under 100 ms,
growth no worse than linear. --markdown prints the README's discovery table and its summary line, exactly as the
README shows them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Row:
    """One generated host's size and the best times measured on it, in seconds."""

    memdevs: int
    regions: int
    nodes: int
    blocks: int
    discover: float
    classify: float
    peer: float

    @property
    def total(self) -> float:
        return self.discover + self.classify


def measure(repeat: int) -> list[Row]:
    """Generate each host of SIZES in a temporary directory and time discovery, classification and the peer."""
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
            assert len(facts.blocks) == blocks, len(facts.blocks)
            t_disc = best(lambda fs=fs: discover(fs), repeat)
            t_cls = best(lambda facts=facts: classify(facts), repeat)
            t_peer = best(lambda root=root: read_tree(root), repeat)
            rows.append(Row(memdevs, regions, nodes, blocks, t_disc, t_cls, t_peer))
    return rows


def summary(rows: list[Row]) -> str:
    """The largest host's time against the target, and the growth from the smallest host to the largest."""
    first, last = rows[0], rows[-1]
    grew, more = last.total / first.total, last.blocks / first.blocks
    return (
        f"largest host: {1e3 * last.total:.1f} ms (target < 100 ms); time grew {grew:.1f}x for {more:.0f}x the blocks "
        f"(growth/linear = {grew / more:.2f}; <= 1 is linear or better)"
    )


def markdown(rows: list[Row]) -> str:
    """The README's discovery table and the summary line under it."""
    head = ["memdevs", "regions", "nodes", "blocks", "discover", "classify", "total", "peer (raw read)", "ratio"]
    lines = ["| " + " | ".join([*head, "us per block"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        cells = [str(v) for v in (r.memdevs, r.regions, r.nodes, r.blocks)]
        cells += [f"{1e3 * r.discover:.1f}ms", f"{1e3 * r.classify:.2f}ms", f"{1e3 * r.total:.1f}ms"]
        cells += [f"{1e3 * r.peer:.1f}ms", f"{r.total / r.peer:.2f}", f"{1e6 * r.total / r.blocks:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", summary(rows) + "."])


def text(rows: list[Row]) -> str:
    """The plain-text report: the same figures in aligned columns."""
    lines = [f"{'memdevs':>7} {'regions':>7} {'nodes':>5} {'blocks':>6}  {'discover':>9} {'classify':>9}"
             f" {'total':>9}  {'peer read':>9} {'ratio':>6}  {'us/block':>8}"]  # fmt: skip
    for r in rows:
        lines.append(f"{r.memdevs:>7} {r.regions:>7} {r.nodes:>5} {r.blocks:>6}  {1e3 * r.discover:>7.1f}ms"
                     f" {1e3 * r.classify:>7.2f}ms {1e3 * r.total:>7.1f}ms  {1e3 * r.peer:>7.1f}ms"
                     f" {r.total / r.peer:>6.2f}  {1e6 * r.total / r.blocks:>8.2f}")  # fmt: skip
    return "\n".join([*lines, "", summary(rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--markdown", action="store_true", help="print the README's table and summary line instead")
    args = ap.parse_args(argv)
    rows = measure(args.repeat)
    print(markdown(rows) if args.markdown else text(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
