"""A CXL memdev's mailbox through its char device: which commands the kernel lets user space send, and Get Health
Info (what `cxl list -H` shows). The ioctls go through HostFS.ioctl; the layouts and the parsing are in
cxltierd.ras.mailbox.

`read_health(fs, memdev)` returns the parsed health fields, or raises MailboxRefused with one line saying why the
kernel or the device will not answer (no char device, permission, the device does not support the command, the
kernel owns it), so a caller can say it once instead of failing at every poll.
"""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

import cxltierd.ras.mailbox as mb
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS

DEV_DIR = "/dev/cxl"
MAX_COMMANDS = 64


class MailboxRefused(CxltierdError):
    """The mailbox cannot answer Get Health Info on this memdev; str() says why in one line."""


class _Query(ctypes.Structure):
    _fields_ = [
        ("n_commands", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint32),
        ("commands", ctypes.c_uint8 * (mb.INFO_SIZE * MAX_COMMANDS)),
    ]


class _Payload(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("rsvd", ctypes.c_uint32), ("payload", ctypes.c_uint64)]


class _Send(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("raw", ctypes.c_uint32),  # raw.opcode + raw.rsvd, or rsvd: zero for a named command
        ("retval", ctypes.c_uint32),
        ("in_", _Payload),
        ("out", _Payload),
    ]


def device(memdev: str) -> str:
    """The kernel path of a memdev's char device."""
    return f"{DEV_DIR}/{memdev}"


@dataclass(frozen=True)
class Reply:
    """What a sent command returned: the device's return code and the output payload."""

    retval: int
    payload: bytes


def commands(fs: HostFS, memdev: str) -> dict[int, mb.CommandInfo]:
    """The commands the kernel knows for this memdev, with their ENABLED/EXCLUSIVE flags. Raises HostFSError."""
    q = _Query(n_commands=0)
    fs.ioctl(device(memdev), mb.QUERY_COMMANDS, q)  # n_commands 0: the kernel answers how many it knows
    count = min(q.n_commands, MAX_COMMANDS)
    q = _Query(n_commands=count)
    fs.ioctl(device(memdev), mb.QUERY_COMMANDS, q)
    return mb.parse_commands(bytes(q.commands), count)


def send(fs: HostFS, memdev: str, command_id: int, out_size: int) -> Reply:
    """Send a command that takes no input; its return code and output. Raises HostFSError."""
    out = (ctypes.c_uint8 * out_size)()
    cmd = _Send(id=command_id, out=_Payload(size=out_size, payload=ctypes.addressof(out)))
    fs.ioctl(device(memdev), mb.SEND_COMMAND, cmd)
    return Reply(cmd.retval, bytes(out)[: min(cmd.out.size, out_size)])


def read_health(fs: HostFS, memdev: str) -> dict[str, int | str]:
    """The memdev's Get Health Info, parsed. Raises MailboxRefused saying why it cannot be read."""
    try:
        refusal = mb.health_refusal(commands(fs, memdev))
    except HostFSError as e:
        raise MailboxRefused(_why(e, memdev)) from None
    if refusal is not None:
        raise MailboxRefused(f"{memdev}: {refusal}")
    try:
        reply = send(fs, memdev, mb.ID_GET_HEALTH_INFO, mb.HEALTH_INFO_SIZE)
    except HostFSError as e:
        raise MailboxRefused(_why(e, memdev)) from None
    if reply.retval:
        raise MailboxRefused(f"{memdev}: Get Health Info: the device returned {reply.retval:#x}")
    try:
        return mb.parse_health_info(reply.payload)
    except ValueError as e:
        raise MailboxRefused(f"{memdev}: {e}") from None


def _why(e: HostFSError, memdev: str) -> str:
    where = device(memdev)
    return {
        errno.ENOENT: f"{memdev}: no char device {where} (a private /dev such as systemd's PrivateDevices=yes, "
        "devtmpfs not mounted, or no mailbox)",
        errno.EACCES: f"{memdev}: {where}: permission denied (root or CAP_SYS_ADMIN needed)",
        errno.EPERM: f"{memdev}: {where}: operation not permitted (root or CAP_SYS_ADMIN needed)",
        errno.ENOTTY: f"{memdev}: {where}: the kernel does not accept the command (not supported)",
        errno.EBUSY: f"{memdev}: Get Health Info is kernel-exclusive (EBUSY)",
    }.get(e.errno or 0, f"{memdev}: {e}")
