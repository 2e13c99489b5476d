"""Pictures of simulated runs (`cxltierd simulate --plot/--heatmap`), PNG or SVG by the file's extension.

`plot_runs`: the fast-tier access share and the access-weighted mean loaded latency over time for each placer, and the
bytes each moved per interval.
`plot_heatmap`: region heat over time against address (offset from the process's lowest region), one panel per process (what damo's heatmap shows for DAMON).
matplotlib is an optional extra (`pip install 'cxltierd[plot]'`); without it both raise one CxltierdError line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cxltierd.emulate.simulate import RunResult
from cxltierd.errors import CxltierdError

FORMATS = (".png", ".svg")
MISSING = "{option} needs matplotlib, which is not installed: pip install 'cxltierd[plot]'"


def _pyplot(option: str, path: str) -> Any:
    """The pyplot module of matplotlib on the file-only Agg backend, after checking the file's format."""
    if Path(path).suffix.lower() not in FORMATS:
        raise CxltierdError(f"{path}: {option} writes PNG or SVG: name the file .png or .svg")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CxltierdError(MISSING.format(option=option)) from None
    return plt


def check(option: str, path: str) -> None:
    """Raise the CxltierdError `option` would raise for `path` (a format it cannot write, matplotlib missing), before
    a long run."""
    _pyplot(option, path)


def _save(plt: Any, fig: Any, path: str) -> None:
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise CxltierdError(f"{path}: cannot write the picture ({e.strerror or e})") from None
    finally:
        plt.close(fig)


def plot_runs(scenario: str, results: list[RunResult], path: str) -> None:
    """Fast-tier access share, mean loaded latency and bytes moved per interval over time, one line per placer,
    written to `path`."""
    plt = _pyplot("--plot", path)
    fig, (share, latency, moved) = plt.subplots(3, 1, figsize=(10, 9.5), sharex=True)
    for r in results:
        share.plot([t for t, _ in r.series], [100 * s for _, s in r.series], label=r.placer, linewidth=1.2)
        latency.plot([t for t, _ in r.latency], [ns for _, ns in r.latency], label=r.placer, linewidth=1.0)
        moved.plot([t for t, _ in r.moved], [b / (1 << 20) for _, b in r.moved], label=r.placer, linewidth=1.0)
    share.set_ylabel("accesses served by the fastest tier (%)")
    share.set_ylim(0, 100)
    share.set_title(f"scenario {scenario}")
    share.legend(loc="lower right")
    share.grid(alpha=0.3)
    latency.set_ylabel("mean loaded latency (ns)")
    latency.grid(alpha=0.3)
    moved.set_ylabel("moved per interval (MiB)")
    moved.set_xlabel("scenario time (s)")
    moved.grid(alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, path)


def plot_heatmap(scenario: str, result: RunResult, path: str) -> None:
    """Accesses/s of each region over time against its address, one panel per process, written to `path`."""
    plt = _pyplot("--heatmap", path)
    if not result.heat:
        raise CxltierdError(f"{path}: the run recorded no intervals to draw")
    times = [t for t, _ in result.heat]
    pids = sorted({pid for _, rates in result.heat for pid, _ in rates})
    fig, axes = plt.subplots(len(pids), 1, figsize=(10, 2.2 + 2.2 * len(pids)), squeeze=False)
    size = result.region_size or 1
    image = None
    top = max((r for _, rates in result.heat for r in rates.values()), default=0.0)
    for ax, pid in zip((a[0] for a in axes), pids, strict=True):
        starts = sorted({start for _, rates in result.heat for p, start in rates if p == pid})
        row = {start: i for i, start in enumerate(starts)}
        grid = [[math.nan] * len(times) for _ in starts]
        for j, (_, rates) in enumerate(result.heat):
            for (p, start), rate in rates.items():
                if p == pid:
                    grid[row[start]][j] = math.log10(1 + rate)
        span = (starts[-1] - starts[0] + size) if starts else size  # drawn from the process's lowest region
        image = ax.imshow(
            grid,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            cmap="inferno",
            vmin=0,
            vmax=math.log10(1 + top) or 1,
            extent=(0, times[-1], 0, span / (1 << 20)),
        )
        ax.set_ylabel(f"{result.processes.get(pid, pid)} ({pid})\noffset (MiB)")
    axes[-1][0].set_xlabel("scenario time (s)")
    axes[0][0].set_title(f"scenario {scenario}, placer {result.placer}: region heat")
    fig.colorbar(image, ax=[a[0] for a in axes], label="log10(1 + accesses/s)")
    _save(plt, fig, path)
