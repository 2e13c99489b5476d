"""Host-side checks of the lab's two guest PID 1s (tests/lab/init.sh, sourced by tests/lab/run.sh): the kernel
command line per mode, finding the built .deb, the guest's milestone line; and the systemd-mode tests' skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INIT_SH = ROOT / "tests/lab/init.sh"


def sh(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `script` in bash after sourcing init.sh."""
    return subprocess.run(
        ["bash", "-c", f'. "{INIT_SH}"; {script}'], input=stdin, capture_output=True, text=True, timeout=30
    )


def test_init_helpers_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck not found: install it with `apt-get install shellcheck` (tests/run.sh does)")
    out = subprocess.run(["shellcheck", "-x", "tests/lab/init.sh"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_kernel_command_line_per_pid1() -> None:
    shell = sh("lab_init_append shell")
    assert shell.returncode == 0 and shell.stdout.strip() == ""
    systemd = sh("lab_init_append systemd")
    assert systemd.returncode == 0
    assert systemd.stdout.split() == ["systemd.show_status=error", "systemd.crash_shell=0", "systemd.crash_reboot=1"]
    assert sh("lab_init_append busybox").returncode == 1


def test_one_deb_is_found_and_none_or_two_are_refused(tmp_path: Path) -> None:
    assert sh(f"lab_one_deb {tmp_path}").returncode == 1
    (tmp_path / "build.out").write_text("log")
    (tmp_path / "cxltierd_0.1.0_all.deb").write_text("deb")
    out = sh(f"lab_one_deb {tmp_path}")
    assert out.returncode == 0 and out.stdout.strip() == str(tmp_path / "cxltierd_0.1.0_all.deb")
    (tmp_path / "cxltierd_0.2.0_all.deb").write_text("deb")
    assert sh(f"lab_one_deb {tmp_path}").returncode == 1


def test_guest_times_in_order_with_the_pytest_span() -> None:
    times = (
        "init 13.42\nudev_settled 47.28\nregion_online 49.70\ninstalled 94.03\npytest_start 94.40\npytest_end 109.03\n"
    )
    out = sh("lab_guest_times", times)
    assert out.stdout.strip() == (
        "init 13.42s, udev_settled 47.28s, region_online 49.70s, installed 94.03s, pytest 94.40s..109.03s (14.6s)"
    )
    # a guest that died during pytest: the start is still shown
    assert sh("lab_guest_times", "init 4\npytest_start 20\n").stdout.strip() == "init 4s, pytest from 20s"
    assert sh("lab_guest_times", "").stdout.strip() == ""


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "needs the QEMU lab guest"),
        ({"CXLTIERD_LAB": "1"}, "needs the systemd-mode lab guest"),
    ],
)
def test_systemd_mode_tests_skip_elsewhere(env: dict[str, str], reason: str) -> None:
    """Outside the guest the lab's own skip applies; in the shell-mode guest (CXLTIERD_LAB=1 without
    CXLTIERD_LAB_INIT=systemd) the systemd-mode tests skip too, and say how to run them."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CXLTIERD_LAB")}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/lab/systemd", "-q", "-p", "no:cacheprovider", "-rs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, **env},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert reason in out.stdout and " passed" not in out.stdout, out.stdout
