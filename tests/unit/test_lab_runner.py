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


def test_runner_passes_shellcheck() -> None:
    """shellcheck (tests/run.sh installs it) on the lab runner, the kernel helper it sources, and tests/run.sh."""
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck not found: install it with `apt-get install shellcheck` (tests/run.sh does)")
    repo = LAB.parents[1]
    files = ["tests/lab/run.sh", "tests/lab/kernel.sh", "tests/run.sh"]
    out = subprocess.run(["shellcheck", "-x", *files], cwd=repo, capture_output=True, text=True)
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


# ---- the guest kernel: CXLTIERD_LAB_KERNEL=lts|newest, resolved from the suite's metapackage (tests/lab/kernel.sh) --

# `apt-cache depends -t SUITE ...` as recorded on 2026-12-01 (abridged where noted).
META_LTS = """linux-image-amd64
  Depends: linux-image-6.12.95+deb12-amd64
"""
META_NEWEST = """linux-image-amd64
  Depends: linux-base-amd64
  Depends: linux-image-7.3.4+deb13-amd64
  Depends: linux-modules-amd64
"""
IMAGE_LTS = """linux-image-6.12.95+deb12-amd64
  PreDepends: kmod
  PreDepends: linux-base
  Depends: initramfs-tools
  Recommends: firmware-linux-free
  Recommends: apparmor
"""
IMAGE_NEWEST = """linux-image-7.3.4+deb13-amd64
  PreDepends: linux-base
 |Depends: dracut
 |Depends: initramfs-tools
  Depends: <linux-initramfs-tool>
    dracut
  Depends: linux-base-7.3.4+deb13-amd64
  Depends: linux-binary-7.3.4+deb13-amd64
  Depends: linux-modules-7.3.4+deb13-amd64
  Suggests: linux-doc-7.3
"""


def kernel_sh(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `script` in bash after sourcing tests/lab/kernel.sh."""
    return subprocess.run(
        ["bash", "-c", f'. "{LAB / "kernel.sh"}"; {script}'], input=stdin, capture_output=True, text=True, timeout=30
    )


def test_kernel_flavours_map_to_their_suites():
    assert kernel_sh("lab_kernel_suite lts").stdout == "bookworm-backports\n"
    assert kernel_sh("lab_kernel_suite newest").stdout == "trixie-backports\n"
    assert kernel_sh("lab_kernel_suite 6.12").returncode != 0


def test_kernel_packages_resolved_from_the_metapackage_in_both_layouts():
    assert kernel_sh("lab_kernel_image", META_LTS).stdout == "linux-image-6.12.95+deb12-amd64\n"
    assert kernel_sh("lab_kernel_image", META_NEWEST).stdout == "linux-image-7.3.4+deb13-amd64\n"
    assert kernel_sh("lab_kernel_image", "linux-image-amd64\n  Depends: linux-base-amd64\n").returncode != 0
    lts = kernel_sh("lab_kernel_packages linux-image-6.12.95+deb12-amd64", IMAGE_LTS)
    assert lts.stdout.split() == ["linux-image-6.12.95+deb12-amd64"]
    newest = kernel_sh("lab_kernel_packages linux-image-7.3.4+deb13-amd64", IMAGE_NEWEST)
    assert newest.stdout.split() == [
        "linux-binary-unsigned-7.3.4+deb13-amd64",
        "linux-modules-7.3.4+deb13-amd64",
        "linux-base-7.3.4+deb13-amd64",
    ]
    assert kernel_sh("lab_kernel_packages linux-image-9.9", "").returncode != 0  # not in the suite


def test_kernel_files_found_in_both_layouts(tmp_path):
    old = tmp_path / "deb12"
    (old / "lib/modules/6.12.95+deb12-amd64/kernel").mkdir(parents=True)
    (old / "boot").mkdir()
    (old / "boot/vmlinuz-6.12.95+deb12-amd64").write_text("k")
    (old / "boot/config-6.12.95+deb12-amd64").write_text("c")
    out = kernel_sh(f"lab_kernel_files {old}")
    assert out.returncode == 0 and out.stdout.split("\n")[:3] == [
        "6.12.95+deb12-amd64",
        f"{old}/boot/vmlinuz-6.12.95+deb12-amd64",
        f"{old}/boot/config-6.12.95+deb12-amd64",
    ]
    new = tmp_path / "deb13"
    kv = new / "usr/lib/modules/7.3.4+deb13-amd64"
    (kv / "kernel").mkdir(parents=True)
    (kv / "vmlinuz.unsigned").write_text("k")
    (kv / "config").write_text("c")
    out = kernel_sh(f"lab_kernel_files {new}")
    assert out.returncode == 0 and out.stdout.split("\n")[:3] == [
        "7.3.4+deb13-amd64",
        f"{new}/lib/modules/7.3.4+deb13-amd64/vmlinuz.unsigned",
        f"{new}/lib/modules/7.3.4+deb13-amd64/config",
    ]
    assert (new / "lib").is_symlink() and (new / "lib/modules/7.3.4+deb13-amd64/kernel").is_dir()
    (kv / "config").unlink()
    assert kernel_sh(f"lab_kernel_files {new}").returncode != 0  # no config: not a usable kernel


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CXLTIERD_LAB_KERNEL": "6.12"}, "CXLTIERD_LAB_KERNEL must be lts or newest, not '6.12'"),
        (
            {"CXLTIERD_LAB_KERNEL_PKG": "linux-modules-7.3"},
            "CXLTIERD_LAB_KERNEL_PKG must name a linux-image-KV package",
        ),
        ({"CXLTIERD_LAB_TOPOLOGY": "tiers4"}, "CXLTIERD_LAB_TOPOLOGY must be default or tiers3, not 'tiers4'"),
    ],
)
def test_runner_refuses_a_bad_kernel_choice_before_doing_anything(tmp_path, env, message):
    lab = tmp_path / "lab"
    out = subprocess.run(
        ["bash", str(LAB / "run.sh"), "tests/lab"],
        env={"PATH": os.environ["PATH"], "CXLTIERD_LAB_DIR": str(lab), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 100 and f"lab: ERROR: preconditions: {message}" in out.stderr
    assert not lab.exists()


def test_the_whole_suite_runs_the_lab_once_per_kernel():
    """tests/run.sh boots the lab for each kernel, even when the first one fails, and says which one it runs."""
    text = (ROOT / "tests/run.sh").read_text()
    loop = text[text.index("for kernel in lts newest; do") :]
    assert "CXLTIERD_LAB_KERNEL=$kernel bash tests/lab/run.sh tests/lab" in loop
    assert "== lab, kernel $kernel" in loop and "|| rc=$?" in loop
    assert "CXLTIERD_LAB_TOPOLOGY=tiers3 CXLTIERD_LAB_KERNEL=$kernel bash tests/lab/run.sh tests/lab/tiers3" in loop


# ---- the guest's topology: CXLTIERD_LAB_TOPOLOGY=default|tiers3 (run.sh section 5) ---------------------------------


def qemu_line(topology: str) -> list[str]:
    """The QEMU command run.sh builds for a topology (its section 5, run with stand-in paths)."""
    text = (LAB / "run.sh").read_text()
    section = text[text.index("# ---- 5. QEMU") : text.index("printf '%q ' \"${QEMU[@]}\"")]
    script = (
        f"set -u; TOPOLOGY={topology} VMLINUZ=/k INITRD=/i SHARE=/s LAB=/l PID1=shell CHECKOUT=/c VENV_PY=/p CTL=/t\n"
        "lab_init_append() { echo; }\n" + section + 'printf "%s\\0" "${QEMU[@]}"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.split("\0")[:-1]


def fmw(line: list[str]) -> str:
    """The fixed memory windows' -M argument."""
    return line[line.index("-M", line.index("-M") + 1) + 1]


def hmat(line: list[str], target: int, initiator: int = 0) -> list[str]:
    return [a for a in line if a.startswith(f"hmat-lb,initiator={initiator},target={target},")]


def test_the_default_topology_has_one_cxl_device_and_a_slow_node_2():
    line = qemu_line("default")
    assert fmw(line) == "cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G"
    assert [a for a in line if a.startswith("cxl-type3,")] == [
        "cxl-type3,bus=rp0,volatile-memdev=cxl-mem0,id=cxl-vmem0"
    ]
    assert not [a for a in line if "cxl-upstream" in a or "cxl-mem1" in a]
    assert [a.rsplit(",", 1)[1] for a in hmat(line, 2)] == ["latency=80", "bandwidth=5G"]


def test_the_tiers3_topology_adds_a_switched_device_and_makes_node_2_hbm():
    default, tiers3 = qemu_line("default"), qemu_line("tiers3")
    assert fmw(tiers3) == ("cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G,cxl-fmw.1.targets.0=cxl.1,cxl-fmw.1.size=4G")
    chain = ["cxl-rp,port=1,bus=cxl.1,id=rp1,chassis=0,slot=3", "cxl-upstream,bus=rp1,id=us0",
             "cxl-downstream,port=0,bus=us0,id=swport0,chassis=0,slot=4",
             "cxl-type3,bus=swport0,volatile-memdev=cxl-mem1,id=cxl-vmem1"]  # fmt: skip
    assert [a for a in tiers3 if a in chain] == chain
    assert "memory-backend-ram,id=cxl-mem1,size=256M" in tiers3
    assert [a.rsplit(",", 1)[1] for a in hmat(tiers3, 2)] == ["latency=15", "bandwidth=80G"]
    assert [a.rsplit(",", 1)[1] for a in hmat(tiers3, 0)] == [a.rsplit(",", 1)[1] for a in hmat(default, 0)]
    # Everything else as in the default line: the same nodes, memory, CPUs and host bridge.
    extra = {"-object", "-device", "memory-backend-ram,id=cxl-mem1,size=256M", *chain}
    changed = {*hmat(default, 2), *hmat(default, 2, 1), *hmat(tiers3, 2), *hmat(tiers3, 2, 1)}
    changed |= {"cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G", fmw(tiers3)}
    assert [a for a in tiers3 if a not in extra | changed] == [a for a in default if a not in extra | changed]
