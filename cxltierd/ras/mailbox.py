"""The CXL mailbox as the kernel exposes it on a memdev's char device (/dev/cxl/memN, include/uapi/linux/cxl_mem.h):
the ioctl numbers and command ids, and pure parsers of what the ioctls return.

Two ioctls: CXL_MEM_QUERY_COMMANDS fills an array of `struct cxl_command_info` (id, flags, size_in, size_out: four
u32), one per command the kernel knows, flagged ENABLED when the device supports it and EXCLUSIVE when the kernel
owns it (a send then fails with EBUSY); CXL_MEM_SEND_COMMAND runs one command by id. Get Health Info (opcode 0x4200,
command id 7) returns 18 bytes, little endian (CXL 3.x Get Health Info output payload):
    0 health status (bit 0 maintenance needed, 1 performance degraded, 2 replacement needed)
    1 media status (0 normal ... 9 all data loss imminent)
    2 additional status (bits 1:0 life used alert, 3:2 temperature alert, 4 corrected volatile count warning,
      5 corrected persistent count warning)
    3 life used (percent; 0xff not implemented)
    4 device temperature (s16, degrees C; 0x7fff or 0xffff not implemented)
    6 dirty shutdown count (u32)
    10 corrected volatile error count (u32), 14 corrected persistent error count (u32)
`parse_health_info` returns the same keys and spellings as the kernel's cxl_memory_module trace event
(cxltierd.ras.events), so the health model reads both alike.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# _IOR(0xCE, 1, struct cxl_mem_query_commands) (8 bytes before the flexible array) and
# _IOWR(0xCE, 2, struct cxl_send_command) (48 bytes)
QUERY_COMMANDS = (2 << 30) | (8 << 16) | (0xCE << 8) | 1
SEND_COMMAND = (3 << 30) | (48 << 16) | (0xCE << 8) | 2
ID_IDENTIFY = 1
ID_GET_HEALTH_INFO = 7
FLAG_ENABLED = 1
FLAG_EXCLUSIVE = 2
INFO_SIZE = 16  # struct cxl_command_info
HEALTH_INFO_SIZE = 18

HEALTH_FLAGS = ((1, "MAINTENANCE_NEEDED"), (2, "PERFORMANCE_DEGRADED"), (4, "REPLACEMENT_NEEDED"))
MEDIA_STATUS = (
    "Normal",
    "Not Ready",
    "Write Persistency Lost",
    "All Data Lost",
    "Write Persistency Loss in the Event of Power Loss",
    "Write Persistency Loss in Event of Shutdown",
    "Write Persistency Loss Imminent",
    "All Data Loss in Event of Power Loss",
    "All Data Loss in Event of Shutdown",
    "All Data Loss Imminent",
)
TWO_BIT = ("Normal", "Warning", "Critical", "Reserved")


@dataclass(frozen=True)
class CommandInfo:
    """One entry of CXL_MEM_QUERY_COMMANDS."""

    id: int
    flags: int
    size_in: int
    size_out: int

    @property
    def enabled(self) -> bool:
        """The device supports the command and the kernel lets user space send it."""
        return bool(self.flags & FLAG_ENABLED)

    @property
    def exclusive(self) -> bool:
        """The kernel owns the command: a send fails with EBUSY."""
        return bool(self.flags & FLAG_EXCLUSIVE)


def parse_commands(data: bytes, count: int) -> dict[int, CommandInfo]:
    """The `count` command_info entries in `data` (the array after the query header), by command id."""
    out = {}
    for i in range(min(count, len(data) // INFO_SIZE)):
        cid, flags, size_in, size_out = struct.unpack_from("<IIII", data, i * INFO_SIZE)
        out[cid] = CommandInfo(cid, flags, size_in, size_out)
    return out


def health_refusal(commands: dict[int, CommandInfo]) -> str | None:
    """Why Get Health Info cannot be sent, from the query's answer; None when it can."""
    info = commands.get(ID_GET_HEALTH_INFO)
    if info is None:
        return "the kernel does not offer Get Health Info"
    if not info.enabled:
        return "Get Health Info (0x4200) is not supported by the device"
    if info.exclusive:
        return "Get Health Info is kernel-exclusive"
    return None


def parse_health_info(payload: bytes) -> dict[str, int | str]:
    """The Get Health Info output as the cxl_memory_module event's health fields (figures a device does not
    implement are left out). Raises ValueError when the payload is short."""
    if len(payload) < HEALTH_INFO_SIZE:
        raise ValueError(f"Get Health Info: {len(payload)} bytes, expected {HEALTH_INFO_SIZE}")
    hs, ms, add, life, temp, dirty, vol, per = struct.unpack_from("<BBBBhIII", payload)
    out: dict[str, int | str] = {
        "health_status": "|".join(name for bit, name in HEALTH_FLAGS if hs & bit),
        "media_status": MEDIA_STATUS[ms] if ms < len(MEDIA_STATUS) else f"Reserved ({ms:#x})",
        "as_life_used": TWO_BIT[add & 3],
        "as_dev_temp": TWO_BIT[(add >> 2) & 3],
        "as_cor_vol_err_cnt": TWO_BIT[(add >> 4) & 1],
        "as_cor_per_err_cnt": TWO_BIT[(add >> 5) & 1],
    }
    if life != 0xFF:
        out["life_used"] = life
    if temp not in (0x7FFF, -1):
        out["device_temp"] = temp
    out.update(dirty_shutdown_cnt=dirty, cor_vol_err_cnt=vol, cor_per_err_cnt=per)
    return out


def describe(health: dict[str, int | str]) -> str:
    """A one-line summary of health fields: status, media, life used, temperature, counts."""
    parts = [f"health {health.get('health_status') or 'normal'}", f"media {health.get('media_status', '?')}"]
    if "life_used" in health:
        parts.append(f"life used {health['life_used']}%")
    if "device_temp" in health:
        parts.append(f"{health['device_temp']} C")
    parts.append(f"dirty shutdowns {health.get('dirty_shutdown_cnt', '?')}")
    parts.append(f"corrected {health.get('cor_vol_err_cnt', '?')}/{health.get('cor_per_err_cnt', '?')}")
    return ", ".join(parts)
