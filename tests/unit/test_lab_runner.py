"""Host-side checks of the QEMU lab (tests/lab): the runner parses, lab tests skip outside the guest, and the workload
helper binds and reports its buffer. The lab itself runs with `bash tests/lab/run.sh tests/lab`."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests/lab"


def test_runner_parses() -> None:
    subprocess.run(["bash", "-n", str(LAB / "run.sh")], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_runner_passes_shellcheck() -> None:
    out = subprocess.run(["shellcheck", str(LAB / "run.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_lab_tests_are_marked_and_skipped_outside_the_guest() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXLTIERD_LAB")}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", str(LAB), "-q", "-m", "lab", "-p", "no:cacheprovider", "-rs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "needs the QEMU lab guest: run bash tests/lab/run.sh" in out.stdout
    assert " passed" not in out.stdout and "deselected" not in out.stdout


@pytest.mark.skipif(not Path("/sys/devices/system/node/node0").is_dir(), reason="no NUMA node 0")
def test_workload_binds_its_buffer_and_reports_it() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(LAB / "workload.py"), "--node", "0", "--mib", "2", "--hot-mib", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LD_BIND_NOW": "1"},
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "workload.py did not report within 60 s"
        info = json.loads(proc.stdout.readline())
        assert info["pid"] == proc.pid and info["node"] == 0
        assert info["length"] == 2 << 20 and info["hot_length"] == 1 << 20
        maps = Path(f"/proc/{proc.pid}/numa_maps").read_text().splitlines()
        line = next(m for m in maps if int(m.split()[0], 16) == info["addr"])
        assert " bind:0 " in line
        assert f"N0={info['length'] // info['page_size']}" in line.split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
