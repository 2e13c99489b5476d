"""The systemd unit and tmpfiles entry: they verify cleanly, keep what the daemon needs and stay hardened.

Needs systemd-analyze and systemd-tmpfiles (apt package: systemd). A missing tool fails the test: CI installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "cxltierd.service"
TMPFILES = REPO / "systemd" / "cxltierd.tmpfiles"

# `systemd-analyze security` exposure (0 = locked down, 10 = unprotected) measured 3.0 with systemd 252. What keeps it
# there is required by the job (root, CAP_SYS_ADMIN/PTRACE/NICE, writable kernel tunables, network, /proc, and the
# CXL char devices: without PrivateDevices=yes, which hides /dev/cxl, the figure is 0.2 higher than its 2.8).
MAX_EXPOSURE = 3.0
CAPABILITIES = {"CAP_SYS_NICE", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"}


def require_tool(name: str, apt_package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it with `apt-get install {apt_package}` (CI must have it)")
    return path


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every assignment in order (systemd keys may repeat); continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT)["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key}= missing from the unit"
    assert len(values) == 1, f"{key}= assigned more than once: {values}"
    return values[0]


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """verify needs the Exec binaries to exist: check a copy whose ExecStart and ExecReload point at a stub."""
    analyze = require_tool("systemd-analyze", "systemd")
    stub = tmp_path / "bin" / "cxltierd"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/cxltierd " in text
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    copy = unit_dir / "cxltierd.service"
    assert "ExecReload=/usr/bin/cxltierd " in text
    copy.write_text(text.replace("=/usr/bin/cxltierd ", f"={stub} "))
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # Unknown keys, bad values and missing binaries are warnings with exit code 0: none may name our unit.
    ours = [line for line in output.splitlines() if "cxltierd" in line or str(tmp_path) in line]
    assert not ours, "systemd-analyze verify warnings:\n" + "\n".join(ours)


def test_systemd_analyze_verify_reports_problems(tmp_path: Path) -> None:
    """The check above is only worth something if verify speaks up about a broken unit."""
    analyze = require_tool("systemd-analyze", "systemd")
    copy = tmp_path / "cxltierd.service"
    copy.write_text(UNIT.read_text().replace("[Service]\n", "[Service]\nNoSuchOption=1\n"))
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    output = proc.stdout + proc.stderr
    assert "NoSuchOption" in output
    assert "/usr/bin/cxltierd" in output or proc.returncode != 0


def test_security_exposure_below_threshold() -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    output = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for \S+: ([0-9]+\.[0-9]+)", output)
    assert match, output
    score = float(match.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score <= MAX_EXPOSURE, output


def test_notify_watchdog_reload_restart(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "WatchdogSec") == "30s"
    assert one(service, "ExecStart").split() == [
        "/usr/bin/cxltierd", "run", "--backend", "host", "--listen", "${CXLTIERD_LISTEN}", "$CXLTIERD_ARGS"
    ]  # fmt: skip
    # The listen address has a default when /etc/default/cxltierd is missing (its "-" makes it optional).
    assert "CXLTIERD_LISTEN=0.0.0.0:9750" in service["Environment"]
    assert one(service, "EnvironmentFile") == "-/etc/default/cxltierd"
    # Waits for the daemon's answer and fails when it refuses the file (kill -HUP would return at once, always 0).
    assert one(service, "ExecReload") == "/usr/bin/cxltierd reload"
    assert one(service, "Restart") == "on-failure"
    stop = one(service, "TimeoutStopSec")
    assert re.fullmatch(r"\d+s", stop) and int(stop[:-1]) > 5, "the daemon needs its 5 s to stop"


def test_exactly_three_capabilities(service: dict[str, list[str]]) -> None:
    assert set(one(service, "CapabilityBoundingSet").split()) == CAPABILITIES
    assert set(one(service, "AmbientCapabilities").split()) == CAPABILITIES
    assert one(service, "NoNewPrivileges") == "yes"


def test_no_hardening_that_breaks_the_job(service: dict[str, list[str]]) -> None:
    text = UNIT.read_text()
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    # Read-only /sys and /proc/sys would block every knob write; no network would cut udev netlink and /metrics.
    assert "ProtectKernelTunables" not in live
    assert "PrivateNetwork" not in live
    assert "PrivateUsers" not in live
    assert service.get("ProtectProc", ["default"]) == ["default"]
    assert service.get("ProcSubset", ["all"]) == ["all"]
    # @resources holds move_pages, migrate_pages, mbind, set_mempolicy.
    filters = service.get("SystemCallFilter", [])
    assert filters and filters[0] == "@system-service", filters
    for denied in filters[1:]:
        assert denied.startswith("~"), f"allow-list additions make the filter harder to audit: {denied}"
        assert "@resources" not in denied and "move_pages" not in denied and "migrate_pages" not in denied
    families = set(one(service, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}


def test_devices_are_the_cxl_memdevs_only(service: dict[str, list[str]]) -> None:
    """PrivateDevices=yes would hide /dev/cxl (the mailbox health read); what it implied is set explicitly instead."""
    live = "\n".join(line for line in UNIT.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert "PrivateDevices" not in live
    assert service["DevicePolicy"] == ["closed"] and service["DeviceAllow"] == ["char-cxl rw"]
    assert "~@raw-io" in service["SystemCallFilter"]
    bounding = set(one(service, "CapabilityBoundingSet").split())
    assert not bounding & {"CAP_MKNOD", "CAP_SYS_RAWIO"}


def test_syscall_filter_keeps_page_migration() -> None:
    """@system-service minus ~@privileged still holds every call the daemon makes for page placement."""
    analyze = require_tool("systemd-analyze", "systemd")

    def expand(group: str) -> set[str]:
        out = subprocess.run(
            [analyze, "syscall-filter", "--no-pager", group], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        names: set[str] = set()
        for line in out.splitlines()[1:]:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            names |= expand(item) if item.startswith("@") else {item}
        return names

    allowed = expand("@system-service") - expand("@privileged")
    needed = {"move_pages", "migrate_pages", "mbind", "get_mempolicy", "set_mempolicy", "process_madvise"}
    assert needed <= allowed, needed - allowed


def test_hardening_present(service: dict[str, list[str]]) -> None:
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-cxl rw",  # the CXL memdevs' mailbox (Get Health Info), and no other device
        "ReadOnlyPaths": "/dev",
        "NoExecPaths": "/dev",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert one(service, key) == value, key


def test_runtime_directory_matches_socket_and_tmpfiles(service: dict[str, list[str]]) -> None:
    # The daemon's default --socket is /run/cxltierd/cxltierd.sock.
    assert one(service, "RuntimeDirectory") == "cxltierd"
    assert one(service, "RuntimeDirectoryMode") == "0750"
    entries = [line.split() for line in TMPFILES.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert entries == [["d", "/run/cxltierd", "0750", "root", "root", "-"]]


def test_tmpfiles_entry_creates_the_directory(tmp_path: Path) -> None:
    tmpfiles = require_tool("systemd-tmpfiles", "systemd")
    proc = subprocess.run(
        [tmpfiles, f"--root={tmp_path}", "--create", str(TMPFILES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not proc.stderr.strip(), proc.stderr
    made = tmp_path / "run" / "cxltierd"
    st = made.stat()
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750


MDWE_CHECK = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
    print("UNSUPPORTED", ctypes.get_errno()); sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("NOT-ENFORCED"); sys.exit(0)
except OSError:
    pass
import click, prometheus_client, psutil, pyudev, yaml  # noqa: F401
import cxltierd.cli  # noqa: F401
cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
assert cb(41) == 42
monitor = pyudev.Monitor.from_netlink(pyudev.Context())
monitor.filter_by("memory")
prometheus_client.start_http_server(0, addr="127.0.0.1")
print("OK")
"""


def test_memory_deny_write_execute_is_safe_for_the_runtime() -> None:
    """MemoryDenyWriteExecute=yes: CPython, ctypes callbacks, pyudev and the HTTP server run without W+X memory.

    The kernel's PR_SET_MDWE (6.3+) refuses the same mappings as systemd's seccomp filter.
    """
    proc = subprocess.run(
        [sys.executable, "-c", MDWE_CHECK], capture_output=True, text=True, timeout=60, check=False, cwd=REPO
    )
    out = proc.stdout.strip()
    if out.startswith(("UNSUPPORTED", "NOT-ENFORCED")):
        pytest.skip(f"kernel cannot enforce PR_SET_MDWE here ({out})")
    assert proc.returncode == 0 and out.endswith("OK"), proc.stdout + proc.stderr


MOVE_PAGES_CHECK = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
with open(f"/proc/{pid}/maps") as maps:
    addr = int(maps.readline().split("-")[0], 16)
pages = (ctypes.c_void_p * 1)(addr)
status = (ctypes.c_int * 1)(-999)
query = libc.syscall(279, pid, 1, pages, None, status, 0)  # x86_64 move_pages, nodes=NULL: where is the page?
print("query", query, ctypes.get_errno(), status[0])
if query == 0 and status[0] >= 0:
    nodes = (ctypes.c_int * 1)(status[0])
    moved = libc.syscall(279, pid, 1, pages, nodes, status, 4)  # MPOL_MF_MOVE_ALL, to the node it is on
    print("move", moved, ctypes.get_errno(), status[0])
"""


def test_three_capabilities_suffice_for_move_pages_on_another_users_process() -> None:
    """With only the unit's bounding set, root may query and move (MPOL_MF_MOVE_ALL) pages of a process it does not
    own; with CAP_SYS_ADMIN alone it may not. This is the kernel check behind the unit's CapabilityBoundingSet."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user and to drop capabilities")
    if os.uname().machine != "x86_64":
        pytest.skip("the check calls move_pages by its x86_64 syscall number")
    setpriv = require_tool("setpriv", "util-linux")
    victim = subprocess.Popen([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "30"])
    try:
        # Wait until the child has exec'd sleep as uid 65534.
        for _ in range(100):
            try:
                if Path(f"/proc/{victim.pid}/comm").read_text().strip() == "sleep":
                    break
            except OSError:
                pass
            time.sleep(0.05)

        def run(caps: str) -> list[list[str]]:
            argv = [setpriv, f"--bounding-set=-all,{caps}", "--inh-caps=-all", sys.executable, "-c", MOVE_PAGES_CHECK]
            proc = subprocess.run(
                [*argv, str(victim.pid)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return [line.split() for line in proc.stdout.splitlines()]

        unit_caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in sorted(CAPABILITIES))
        lines = run(unit_caps)
        assert len(lines) == 2, f"move_pages query failed: {lines}"
        move = lines[1]
        assert move[1] == "0" and int(move[3]) >= 0, f"move_pages MOVE_ALL failed: {move}"
        (query,) = run("+sys_admin")
        assert query[1] == "-1" and query[2] == "1", "without SYS_PTRACE the query should fail with EPERM"
    finally:
        victim.kill()
        victim.wait()
