"""doctor's fixes on the real kernel: each suggested command for a knob it warns about is run as printed and
doctor then says ok; each persistent form (sysctl.d, tmpfiles.d) is applied the way boot applies it and sets the
knob; the ZONE_MOVABLE fix for a dax device (offline, then online-memory) runs with daxctl and leaves it movable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from cxltierd.discovery import discover
from cxltierd.hostfs import HostFS
from cxltierd.report.doctor import dax_checks

CXLTIERD = Path(sys.executable).parent / "cxltierd"
NB = Path("/proc/sys/kernel/numa_balancing")
DEMOTION = Path("/sys/kernel/mm/numa/demotion_enabled")


def doctor() -> dict[str, dict[str, Any]]:
    out = subprocess.run([str(CXLTIERD), "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1, 2), out.stderr
    return {c["name"]: c for c in json.loads(out.stdout)}


def sh(command: str) -> None:
    command = re.sub(r" \(.*\)$", "", command)  # the explanation after the command
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (command, out.stdout, out.stderr)


def test_knob_fixes_work_now_and_persist(knob, tmp_path: Path) -> None:
    knob(str(NB), "1")
    knob(str(DEMOTION), "false")
    found = doctor()
    nb, dem = found["numa_balancing"], found["demotion_enabled"]
    assert nb["status"] == "warn" and dem["status"] == "warn"
    sh(nb["fix"])
    sh(dem["fix"])
    after = doctor()
    assert after["numa_balancing"]["status"] == "ok" and after["demotion_enabled"]["status"] == "ok"
    assert NB.read_text().strip() == "2" and DEMOTION.read_text().strip() == "true"
    # the persistent forms, written where printed (the guest's /etc is a throw-away overlay) and applied as at boot
    NB.write_text("1")
    DEMOTION.write_text("false")
    sh(nb["persist"])
    sh(dem["persist"])
    sysctl_file = re.search(r"> (\S+)$", nb["persist"]).group(1)
    tmpfiles_file = re.search(r"> (\S+)$", dem["persist"]).group(1)
    subprocess.run(["sysctl", "-p", sysctl_file], check=True, capture_output=True, timeout=60)
    tmpfiles = shutil.which("systemd-tmpfiles")
    assert tmpfiles, "systemd-tmpfiles missing in the guest"
    subprocess.run([tmpfiles, "--create", tmpfiles_file], check=True, capture_output=True, timeout=60)
    assert NB.read_text().strip() == "2" and DEMOTION.read_text().strip() == "true"


def test_movable_dax_fix_runs_with_daxctl(cxl_node: int) -> None:
    """The fix doctor prints for a dax device online outside ZONE_MOVABLE, run on dax0.0 (the offline half needs
    the node's memory movable, which it is here): daxctl accepts it and the memory comes back online movable."""
    facts = discover(HostFS("/"))
    (dax,) = [d for d in facts.dax if d.chardev == "dax0.0"]
    (check,) = [c for c in dax_checks(replace(facts, dax=(replace(dax, movable=False),))) if c.name == "dax dax0.0"]
    assert "--no-movable=false" not in check.fix and "memhp_default_state=online_movable" in check.persist
    sh(check.fix)
    after = next(d for d in discover(HostFS("/")).dax if d.chardev == "dax0.0")
    assert after.target_node == cxl_node and after.online_memblocks == after.total_memblocks and after.movable
