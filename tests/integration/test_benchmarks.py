"""The benchmarks are not run here (the lab ones need the QEMU guest, all of them take minutes), but they must not rot:
each script starts as a user would run it, and the lab benchmarks take their helpers from tests/lab/labkit.py (the
module the lab tests import) without loading a conftest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
LAB = Path(__file__).resolve().parents[2] / "tests/lab"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_starts(script: str) -> None:
    done = subprocess.run([sys.executable, script, "--help"], cwd=BENCHMARKS, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("module", ["lab_migration", "lab_promotion"])
def test_lab_benchmarks_share_the_lab_helpers_without_a_conftest(module: str) -> None:
    code = (
        f"import sys, {module} as bench; "
        "print(bench.start_workload.__module__, bench.start_workload.__code__.co_filename); "
        "print(sorted(m for m in sys.modules if 'conftest' in m))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    helpers, loaded = done.stdout.splitlines()
    assert helpers.split() == ["labkit", str(LAB / "labkit.py")]
    assert loaded == "[]"
