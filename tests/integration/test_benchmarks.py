"""The benchmarks are not run here (the lab ones need the QEMU guest, all of them take minutes), but they must not rot:
each script starts as a user would run it, and the lab kit loads the lab's helpers the way the lab benchmarks do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "labkit.py"))
def test_benchmark_script_starts(script: str) -> None:
    done = subprocess.run([sys.executable, script, "--help"], cwd=BENCHMARKS, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_lab_kit_loads_the_lab_helpers() -> None:
    code = "import labkit; kit = labkit.lab(); print(kit.vmstat.__name__, kit.pages_on_nodes.__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["vmstat", "pages_on_nodes"]
