"""`cxltierd doctor`'s bandwidth line on fixture hosts: access-rate estimates (and why) on a host without memory
PMUs, measured bandwidth from uncore_imc and cxl_pmu counters once the fixture PMU tree is added to it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from cxltierd.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HOST = FIXTURES / "hosts" / "qemu-cxl-node4"


def bandwidth(root: Path) -> dict[str, str]:
    result = CliRunner().invoke(main, ["doctor", "--root", str(root), "--json"])
    return next(c for c in json.loads(result.stdout) if c["name"] == "bandwidth")


def test_doctor_says_estimates_without_pmus_and_measured_with_them(tmp_path: Path) -> None:
    line = bandwidth(HOST)
    assert line["status"] == "ok" and "access-rate estimates" in line["message"]
    assert "no uncore_imc or cxl_pmu memory-bandwidth counters" in line["message"]
    root = tmp_path / "host"
    shutil.copytree(HOST, root, symlinks=True)
    shutil.copytree(FIXTURES / "pmu" / "sys" / "bus" / "event_source", root / "sys" / "bus" / "event_source")
    line = bandwidth(root)
    assert line["status"] == "ok", line
    # mem0 is region0's memdev, onlined as node 4; the IMCs count on CPU 0 (node 0) and CPU 2 (not on this host)
    assert "measured bandwidth from cxl_pmu and uncore_imc counters on node(s) 0,4" in line["message"], line
    assert "unreadable: uncore_imc_2" in line["message"]
