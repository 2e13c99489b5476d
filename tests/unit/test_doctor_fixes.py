"""doctor's fixes are commands that work (no `daxctl online-memory --no-movable=false`, which daxctl rejects), and
each knob it warns about also says how to keep the fix across reboots: a sysctl.d file, a tmpfiles.d line, a
modules-load.d file or the kernel command line. (The lab runs them: tests/lab/test_doctor_fixes_lab.py.)"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from cxltierd.cli import main
from cxltierd.discovery import discover
from cxltierd.hostfs import HostFS
from cxltierd.report.doctor import run_checks
from cxltierd.topology import classify

REPO = Path(__file__).resolve().parents[2]


def checks_on_a_badly_set_host():
    facts = discover(HostFS(str(REPO / "fixtures/hosts/two-socket-cxl")))
    kernel = replace(facts.kernel, numa_balancing=1, demotion_enabled=False, auto_online_blocks="online")
    facts = replace(facts, kernel=kernel, dax=tuple(replace(d, movable=False) for d in facts.dax))
    return {c.name: c for c in run_checks(facts, classify(facts), None)}


def test_each_knob_fix_has_a_persistent_form():
    found = checks_on_a_badly_set_host()
    nb, dem, aob = found["numa_balancing"], found["demotion_enabled"], found["auto_online_blocks"]
    assert nb.fix.startswith("sysctl -w kernel.numa_balancing=2")
    assert nb.persist == "echo kernel.numa_balancing=2 > /etc/sysctl.d/60-cxltierd.conf"
    assert dem.persist == "echo 'w /sys/kernel/mm/numa/demotion_enabled - - - - true' > /etc/tmpfiles.d/cxltierd.conf"
    assert "memhp_default_state=online_movable" in aob.persist and "kernel command line" in aob.persist
    (dax,) = [c for name, c in found.items() if name.startswith("dax ")]
    assert dax.status == "warn" and dax.fix.startswith("daxctl offline-memory dax0.0 && daxctl online-memory dax0.0")
    assert "memhp_default_state=online_movable" in dax.persist
    assert not any("--no-movable=false" in c.fix + c.persist for c in found.values())


def test_cli_prints_the_persistent_form(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(REPO / "fixtures/hosts/two-socket-cxl", root, symlinks=True)
    (root / "proc/sys/kernel/numa_balancing").write_text("1\n")
    result = CliRunner().invoke(main, ["doctor", "--root", str(root)])
    lines = result.stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if "] numa_balancing:" in line)
    assert lines[i + 1].strip().startswith("fix: sysctl -w kernel.numa_balancing=2")
    assert lines[i + 2].strip() == "persist: echo kernel.numa_balancing=2 > /etc/sysctl.d/60-cxltierd.conf"
