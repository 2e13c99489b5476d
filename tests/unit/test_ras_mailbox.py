"""Device health through the CXL mailbox: the Get Health Info payload and the query answer parsed from bytes, the
ioctls against a fake char device, and the Failover feeding the health model at ras.health_poll, saying a refusal
once."""

from __future__ import annotations

import ctypes
import errno
import logging
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import cxltierd.ras.mailbox as mb
from cxltierd.discovery import mailbox
from cxltierd.errors import HostFSError
from cxltierd.failover import Failover
from cxltierd.hostfs import HostFS
from cxltierd.policy.schema import parse_policy
from cxltierd.report.ras import ras_lines
from cxltierd.service.ras import ras_json, ras_metrics
from tests.unit.test_ras_live import Lines, Mover, fake_loop

# Get Health Info as a device returns it (little endian): maintenance needed + performance degraded, media status 4,
# additional status life used Warning (1) + temperature Critical (2 << 2) + corrected volatile Warning (1 << 4),
# life used 42 %, -5 C, 3 dirty shutdowns, 1000 corrected volatile, 7 corrected persistent errors.
DEGRADED = bytes.fromhex("03 04 19 2a fbff 03000000 e8030000 07000000")
# A healthy device that implements neither life used (0xff) nor the temperature (0x7fff).
NORMAL = bytes.fromhex("00 00 00 ff ff7f 00000000 00000000 00000000")


def test_health_info_payload_parses_to_the_memory_module_fields() -> None:
    assert mb.parse_health_info(DEGRADED) == {
        "health_status": "MAINTENANCE_NEEDED|PERFORMANCE_DEGRADED",
        "media_status": "Write Persistency Loss in the Event of Power Loss",
        "as_life_used": "Warning",
        "as_dev_temp": "Critical",
        "as_cor_vol_err_cnt": "Warning",
        "as_cor_per_err_cnt": "Normal",
        "life_used": 42,
        "device_temp": -5,
        "dirty_shutdown_cnt": 3,
        "cor_vol_err_cnt": 1000,
        "cor_per_err_cnt": 7,
    }
    normal = mb.parse_health_info(NORMAL)
    assert normal["health_status"] == "" and normal["media_status"] == "Normal"
    assert "life_used" not in normal and "device_temp" not in normal  # not implemented by the device
    assert mb.describe(normal) == "health normal, media Normal, dirty shutdowns 0, corrected 0/0"
    replace = mb.parse_health_info(bytes([4, 9]) + NORMAL[2:])
    assert replace["health_status"] == "REPLACEMENT_NEEDED" and replace["media_status"] == "All Data Loss Imminent"
    assert mb.parse_health_info(bytes([0, 0x20]) + NORMAL[2:])["media_status"] == "Reserved (0x20)"
    with pytest.raises(ValueError, match="17 bytes, expected 18"):
        mb.parse_health_info(DEGRADED[:17])


def test_ioctl_numbers_match_the_uapi_header() -> None:
    # _IOR(0xCE, 1, 8-byte struct) and _IOWR(0xCE, 2, 48-byte struct)
    assert mb.QUERY_COMMANDS == 0x8008CE01 and mb.SEND_COMMAND == 0xC030CE02
    assert ctypes.sizeof(mailbox._Send) == 48


def info(cid: int, flags: int, size_out: int = 0) -> bytes:
    return struct.pack("<IIII", cid, flags, 0, size_out)


def test_query_answer_says_whether_health_can_be_sent() -> None:
    data = info(1, 1, 0x43) + info(7, 1, 18) + info(8, 0, 0xFFFFFFFF)
    cmds = mb.parse_commands(data + bytes(16), 3)
    assert set(cmds) == {1, 7, 8} and cmds[7].enabled and not cmds[8].enabled and cmds[1].size_out == 0x43
    assert mb.health_refusal(cmds) is None
    assert "not supported by the device" in (mb.health_refusal(mb.parse_commands(info(7, 0), 1)) or "")
    assert "kernel-exclusive" in (mb.health_refusal(mb.parse_commands(info(7, 3), 1)) or "")
    assert "does not offer" in (mb.health_refusal(mb.parse_commands(info(1, 1), 1)) or "")


class FakeDevice(HostFS):
    """A memdev char device answering the two ioctls the way the kernel does (cxl_query_cmd, cxl_send_cmd)."""

    def __init__(self, root: Path, flags: int = 1, payload: bytes = DEGRADED, err: int | None = None) -> None:
        super().__init__(root)
        self.flags, self.payload, self.err = flags, payload, err
        self.calls: list[tuple[str, int]] = []

    def ioctl(self, kpath: str, request: int, arg: Any) -> None:
        self.calls.append((kpath, request))
        if self.err is not None:
            raise HostFSError(kpath, os_error(self.err), self.err)
        if request == mb.QUERY_COMMANDS:
            table = info(1, 1) + info(7, self.flags, 18)
            if arg.n_commands == 0:
                arg.n_commands = 2  # the kernel answers how many, and leaves n_commands alone otherwise
            else:
                ctypes.memmove(arg.commands, table, min(len(table), 16 * arg.n_commands))
        elif request == mb.SEND_COMMAND:
            assert arg.id == mb.ID_GET_HEALTH_INFO and arg.out.size == 18
            ctypes.memmove(arg.out.payload, self.payload, len(self.payload))
            arg.out.size = len(self.payload)
        else:
            raise AssertionError(request)


def os_error(err: int) -> str:
    return errno.errorcode[err]


def test_read_health_through_the_ioctls(tmp_path: Path) -> None:
    fs = FakeDevice(tmp_path)
    got = mailbox.read_health(fs, "mem0")
    assert got["cor_vol_err_cnt"] == 1000 and got["health_status"] == "MAINTENANCE_NEEDED|PERFORMANCE_DEGRADED"
    assert fs.calls == [("/dev/cxl/mem0", mb.QUERY_COMMANDS)] * 2 + [("/dev/cxl/mem0", mb.SEND_COMMAND)]


@pytest.mark.parametrize(
    ("fs_args", "why"),
    [
        ({"flags": 0}, "mem0: Get Health Info (0x4200) is not supported by the device"),
        ({"flags": 3}, "mem0: Get Health Info is kernel-exclusive"),
        ({"err": errno.EPERM}, "mem0: /dev/cxl/mem0: operation not permitted"),
        ({"err": errno.EACCES}, "mem0: /dev/cxl/mem0: permission denied"),
        ({"err": errno.ENOTTY}, "mem0: /dev/cxl/mem0: the kernel does not accept the command"),
        ({"payload": DEGRADED[:10]}, "mem0: Get Health Info: 10 bytes, expected 18"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, fs_args: dict[str, Any], why: str) -> None:
    with pytest.raises(mailbox.MailboxRefused) as e:
        mailbox.read_health(FakeDevice(tmp_path, **fs_args), "mem0")
    assert str(e.value).startswith(why) and "\n" not in str(e.value)


def test_no_char_device_and_a_plain_file_are_refused(tmp_path: Path) -> None:
    fs = HostFS(tmp_path)
    with pytest.raises(mailbox.MailboxRefused, match="mem0: no char device /dev/cxl/mem0"):
        mailbox.read_health(fs, "mem0")
    (tmp_path / "dev/cxl").mkdir(parents=True)
    (tmp_path / "dev/cxl/mem0").write_text("")
    with pytest.raises(HostFSError, match="not a character device"):
        mailbox.commands(fs, "mem0")


def memdevs(root: Path, *names: str) -> None:
    for n in names:
        (root / "sys/bus/cxl/devices" / n).mkdir(parents=True)


def test_failover_reads_health_at_the_policy_interval_into_the_model(tmp_path: Path) -> None:
    memdevs(tmp_path, "mem0")
    fs = FakeDevice(tmp_path, payload=NORMAL)
    loop = fake_loop(parse_policy("ras: {poison_poll: 1h, health_poll: 30s}\n"))
    f = Failover(Lines([]), Mover({}), fs, None, lambda m: mailbox.read_health(fs, m))
    f.tick(1000.0, loop)
    assert f.states["mem0"].state == "healthy" and f.view().mailbox == {"mem0": "ok"}
    assert len(fs.calls) == 3
    fs.payload = DEGRADED[:6] + NORMAL[6:]  # the device flags maintenance needed, no error counted
    f.tick(1010.0, loop)  # within health_poll: not read again
    assert len(fs.calls) == 3 and f.states["mem0"].state == "healthy"
    f.tick(1031.0, loop)
    h = f.states["mem0"]
    assert h.state == "degraded" and "MAINTENANCE_NEEDED|PERFORMANCE_DEGRADED" in h.cause
    assert "get_health_info" in h.cause and loop.avoid == {4} and 4 not in f.drains
    fs.payload = DEGRADED  # 1007 more corrected errors since the last read: the rate makes it failing
    f.tick(1062.0, loop)
    assert f.states["mem0"].state == "failing" and "corrected errors/h" in f.states["mem0"].cause and 4 in f.drains
    assert f.view().figures["mem0"]["cor_vol_err_cnt"] == 1000
    assert not f.view().events  # a health read is not a trace event
    doc = ras_json(f.view())
    assert doc is not None and doc["mailbox"] == {"mem0": "ok"}
    assert "  device health through the mailbox (Get Health Info): mem0" in ras_lines(doc)


def test_a_refused_mailbox_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    memdevs(tmp_path, "mem0")
    loop = fake_loop(parse_policy("ras: {poison_poll: 1h, health_poll: 1s}\n"))
    f = Failover(Lines([]), Mover({}), HostFS(tmp_path), None, lambda m: mailbox.read_health(HostFS(tmp_path), m))
    caplog.set_level(logging.INFO, "cxltierd")
    for t in range(5):
        f.tick(1000.0 + 2 * t, loop)
    said = [r for r in caplog.records if "not read through the mailbox" in r.getMessage()]
    assert len(said) == 1 and "no char device /dev/cxl/mem0" in said[0].getMessage()
    doc = ras_json(f.view())
    assert doc is not None and doc["mailbox"]["mem0"].startswith("mem0: no char device")
    assert any("device health NOT read through the mailbox: mem0: no char device" in line for line in ras_lines(doc))
    snap = SimpleNamespace(ras=f.view())
    (family,) = [m for m in ras_metrics(snap) if m.name == "cxltierd_ras_mailbox_health_read"]  # type: ignore[arg-type]
    assert [(s.labels, s.value) for s in family.samples] == [({"memdev": "mem0"}, 0)]
    assert f.states == {}  # nothing read, nothing assumed
