"""The CXL mailbox on the lab's real kernel: cxltierd's ioctls on /dev/cxl/mem0 (CXL_MEM_QUERY_COMMANDS,
CXL_MEM_SEND_COMMAND) against QEMU's type-3 device, and what the daemon, `status` and `doctor` say about Get Health
Info.

QEMU 10.0's type-3 device implements no Get Health Info (opcode 0x4200: its health command set has only the alert
configuration), so the kernel lists the command without the ENABLED flag and a memory-module event injected through
QMP cannot be seen through the mailbox (it reaches cxltierd as the cxl_memory_module trace event, test_ras_lab.py).
What is proven here: the query ioctl answers, a command QEMU does implement (Identify) goes through the send ioctl
and returns what sysfs shows, and the refusal of Get Health Info is read as "not supported by the device", said once
in the log and shown in `status` and `doctor`, as ndctl's `cxl list -H` (no health object) agrees.

Kernel views: /sys/bus/cxl/devices/mem0 (firmware_version, ram/size, pmem/size), ndctl's `cxl list`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from labkit import CXL_DEVICE, DaemonFactory, qmp, read

import cxltierd.ras.mailbox as mb
from cxltierd.discovery import mailbox
from cxltierd.hostfs import HostFS

MEM0 = Path("/sys/bus/cxl/devices/mem0")
CXLTIERD = str(Path(__file__).resolve().parents[2] / ".venv/bin/cxltierd")
MiB = 1 << 20
NOT_SUPPORTED = "mem0: Get Health Info (0x4200) is not supported by the device"
TRACING = Path("/sys/kernel/tracing")


@pytest.fixture
def tracefs() -> None:
    """tracefs mounted (the lab's PID 1 does not), so doctor goes on to the mailbox check."""
    if not (TRACING / "instances").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True, timeout=30)


def test_query_and_identify_through_the_char_device() -> None:
    fs = HostFS("/")
    assert Path("/dev/cxl/mem0").is_char_device()
    cmds = mailbox.commands(fs, "mem0")
    print(f"kernel {os.uname().release}: commands " + ", ".join(f"{i}:{c.flags}" for i, c in sorted(cmds.items())))
    assert cmds[mb.ID_IDENTIFY].enabled and not cmds[mb.ID_IDENTIFY].exclusive
    # Identify Memory Device: firmware revision (16 bytes of text), then the total capacity in 256 MiB units
    reply = mailbox.send(fs, "mem0", mb.ID_IDENTIFY, cmds[mb.ID_IDENTIFY].size_out)
    assert reply.retval == 0 and len(reply.payload) == cmds[mb.ID_IDENTIFY].size_out
    firmware = reply.payload[:16].rstrip(b"\0").decode()
    assert firmware == read(MEM0 / "firmware_version")
    total = int.from_bytes(reply.payload[16:24], "little") * 256 * MiB
    sizes = [int(read(MEM0 / f"{part}/size"), 0) for part in ("ram", "pmem") if (MEM0 / part / "size").exists()]
    assert total == sum(sizes) > 0, (total, sizes)
    # Get Health Info: known to the kernel, not implemented by QEMU's device
    assert mb.ID_GET_HEALTH_INFO in cmds and not cmds[mb.ID_GET_HEALTH_INFO].enabled
    with pytest.raises(mailbox.MailboxRefused) as e:
        mailbox.read_health(fs, "mem0")
    assert str(e.value) == NOT_SUPPORTED
    listed = json.loads(subprocess.run(["cxl", "list", "-m", "mem0", "-H"], capture_output=True, text=True).stdout)
    assert listed and "health" not in listed[0], listed  # ndctl's libcxl gets the same refusal


def test_daemon_and_doctor_say_once_that_health_is_not_read(tracefs: None, lab_daemon: DaemonFactory) -> None:
    policy = {"interval": "1s", "engine": "move_pages", "ras": {"poison_poll": "1h", "health_poll": "1s"}}
    d = lab_daemon(policy)
    d.wait_log(r"device health of mem0 is not read through the mailbox")
    ticks = d.ticks()
    # a memory-module event QEMU accepts changes nothing the mailbox reports: still refused, still said once
    reply = qmp(
        "cxl-inject-memory-module-event",
        path=CXL_DEVICE,
        log="warning",
        flags=1,
        type=0,
        **{
            "health-status": 1,
            "media-status": 0,
            "additional-status": 0,
            "life-used": 10,
            "temperature": 40,
            "dirty-shutdown-count": 2,
            "corrected-volatile-error-count": 3,
            "corrected-persistent-error-count": 0,
        },
    )
    assert reply == {"return": {}}, reply
    d.wait_ticks(ticks + 4)
    assert d.log().count("not read through the mailbox") == 1, d.log()
    ras = d.status()["ras"]
    assert ras["mailbox"] == {"mem0": NOT_SUPPORTED}
    d.keep_log(f"ras-mailbox-{os.uname().release}")
    assert d.stop() == 0
    out = subprocess.run([CXLTIERD, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    checks = [c for c in json.loads(out.stdout) if c["name"] == "ras-health"]
    assert [c["status"] for c in checks] == ["warn"] and NOT_SUPPORTED in checks[0]["message"], checks
