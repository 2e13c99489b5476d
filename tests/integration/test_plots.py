"""`cxltierd simulate --plot/--heatmap`: pictures rendered and checked (size, not blank, more than one colour where
the data differ); without matplotlib, or for a format it cannot write, one error line and exit 2 before any run."""

from __future__ import annotations

import builtins
import importlib.util
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxltierd.cli import main

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed (pip install 'cxltierd[plot]')")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def distinct_colours(path: Path) -> int:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path)).reshape(-1, 4)
    return len({tuple(round(float(c), 2) for c in p) for p in pixels[::7]})


@needs_mpl
def test_plot_and_heatmap_png(tmp_path):
    plot, heat = tmp_path / "share.png", tmp_path / "heat.png"
    args = ["simulate", "--scenario", "hotset-shift", "--duration", "120", "--plot", str(plot), "--heatmap", str(heat)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert png_size(plot) == (1000, 950)
    w, h = png_size(heat)
    assert w == 1000 and h >= 400
    assert distinct_colours(plot) > 5  # five placers' lines, axes and text on white
    assert distinct_colours(heat) > 5  # hot and cold regions, colour bar


@needs_mpl
def test_plot_svg(tmp_path):
    out = tmp_path / "share.svg"
    args = ["simulate", "--scenario", "zipf-static", "--duration", "20", "--no-baselines", "--plot", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.count("<path") > 10
    assert "mean loaded latency (ns)" in text  # the latency panel (matplotlib writes axis labels as text)


def test_the_interval_latencies_average_to_the_runs_mean():
    from cxltierd.emulate.simulate import run

    r = run("hotset-shift", duration=60)
    assert len(r.latency) == len(r.moved) > 10
    values = [ns for _, ns in r.latency]
    assert min(values) > 0 and min(values) <= r.mean_latency_ns <= max(values)


def test_missing_matplotlib_is_one_line_before_running(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    out = tmp_path / "x.png"
    result = CliRunner().invoke(main, ["simulate", "--scenario", "hotset-shift", "--plot", str(out)])
    assert result.exit_code == 2
    assert result.stderr == (
        "cxltierd: error: --plot needs matplotlib, which is not installed: pip install 'cxltierd[plot]'\n"
    )
    assert result.stdout == "" and not out.exists()  # refused before the (long) run


def test_unknown_picture_format_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "--scenario", "hotset-shift", "--heatmap", str(tmp_path / "x.jpg")])
    assert (
        result.exit_code == 2
        and result.stderr.count("\n") == 1
        and "x.jpg: --heatmap writes PNG or SVG" in result.stderr
    )
