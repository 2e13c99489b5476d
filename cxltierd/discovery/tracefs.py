"""The RAS readers and writers over HostFS: a tracefs instance of cxltierd's own with the cxl events enabled, the
memdevs' poison lists, soft-offlining a page, offlining memory blocks, and the pages each process holds on a node.

The instance (`/sys/kernel/tracing/instances/cxltierd`) keeps cxltierd off the global buffer and off other tools'
instances; its trace_pipe is read without waiting, each tick. An instance left by a daemon that did not stop
cleanly is cxltierd's own and is taken over. Pure parsing lives in cxltierd.ras.events; numa_maps is parsed here
by node_bytes().
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxltierd.discovery import mailbox
from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.ras.mailbox import describe

TRACING_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
INSTANCE = "cxltierd"
CXL_DEVICES = "/sys/bus/cxl/devices"
SOFT_OFFLINE = "/sys/devices/system/memory/soft_offline_page"
READ_LIMIT = 4 << 20  # bytes of trace text read per tick at most (the rest waits in the ring buffer)
_NODE = re.compile(r"\bN(\d+)=(\d+)")
_PAGESIZE = re.compile(r"\bkernelpagesize_kB=(\d+)")


class TraceInstance:
    """cxltierd's tracefs instance: opened with the cxl events enabled, read without waiting, removed on close."""

    def __init__(self, fs: HostFS) -> None:
        self.fs = fs
        self.path: str | None = None
        self.events: tuple[str, ...] = ()  # the cxl events enabled in the instance

    @staticmethod
    def tracing_root(fs: HostFS) -> str | None:
        """The mounted tracefs (its instances/ directory exists), or None."""
        return next((r for r in TRACING_ROOTS if fs.is_dir(f"{r}/instances")), None)

    @staticmethod
    def available(fs: HostFS) -> tuple[str, ...]:
        """The cxl trace events the kernel defines (events/cxl/NAME), empty without tracefs or CXL events."""
        root = TraceInstance.tracing_root(fs)
        if root is None:
            return ()
        return tuple(n for n in fs.listdir(f"{root}/events/cxl") if n.startswith("cxl_"))

    def open(self) -> None:
        """Make (or take over) the instance and enable every cxl event in it. Raises HostFSError saying why not."""
        root = self.tracing_root(self.fs)
        if root is None:
            raise HostFSError(TRACING_ROOTS[0], "tracefs is not mounted (no instances/ directory)")
        path = f"{root}/instances/{INSTANCE}"
        self.fs.make_dir(path)
        self.path = path
        names = tuple(n for n in self.fs.listdir(f"{path}/events/cxl") if n.startswith("cxl_"))
        if not names:
            self.close()
            raise HostFSError(f"{root}/events/cxl", "the kernel defines no cxl trace events (CONFIG_CXL_BUS off?)")
        enabled = []
        for name in names:
            try:
                self.fs.write(f"{path}/events/cxl/{name}/enable", "1")
                enabled.append(name)
            except HostFSError:
                continue
        self.events = tuple(enabled)

    def read(self) -> list[str]:
        """The trace lines that arrived since the last read (none when the instance is not open)."""
        if self.path is None:
            return []
        return self.fs.read_pipe(f"{self.path}/trace_pipe", READ_LIMIT).splitlines()

    def close(self) -> None:
        """Disable the events and remove the instance (never the global buffer)."""
        if self.path is None:
            return
        path, self.path = self.path, None
        try:
            if self.fs.exists(f"{path}/events/cxl/enable"):
                self.fs.write(f"{path}/events/cxl/enable", "0")
        except HostFSError:
            pass
        self.fs.remove_dir(path)


def trigger_poison_lists(fs: HostFS, memdevs: list[str]) -> list[str]:
    """Ask each memdev for its poison list (its records arrive as cxl_poison events); the memdevs that failed, with
    why. A memdev without trigger_poison_list (no poison list support) is skipped."""
    failed = []
    for m in memdevs:
        path = f"{CXL_DEVICES}/{m}/trigger_poison_list"
        if not fs.exists(path):
            continue
        try:
            fs.write(path, "1")
        except HostFSError as e:
            failed.append(str(e))
    return failed


def soft_offline(fs: HostFS, hpa: int, page: int = 4096) -> None:
    """Soft-offline the page holding host physical address `hpa` (its contents move, the frame is retired)."""
    fs.write(SOFT_OFFLINE, hex(hpa - hpa % page))


def offline_blocks(fs: HostFS, blocks: list[int]) -> list[str]:
    """Offline memory blocks (memoryN/state); the blocks that refused, with why."""
    failed = []
    for b in blocks:
        try:
            fs.write(f"/sys/devices/system/memory/memory{b}/state", "offline")
        except HostFSError as e:
            failed.append(str(e))
    return failed


def node_bytes(numa_maps: str, node: int) -> int:
    """Bytes a process holds on `node`, from its /proc/PID/numa_maps text (pages per node times each mapping's
    kernelpagesize_kB)."""
    total = 0
    for line in numa_maps.splitlines():
        ps = _PAGESIZE.search(line)
        size = int(ps[1]) * 1024 if ps else 4096
        for m in _NODE.finditer(line):
            if int(m[1]) == node:
                total += int(m[2]) * size
    return total


def processes_on(fs: HostFS, node: int) -> dict[int, int]:
    """Map pid -> bytes on `node` of every process whose numa_maps can be read (kernel threads hold none)."""
    out = {}
    for name in fs.listdir("/proc", sort=False):
        if not name.isdigit():
            continue
        try:
            text = fs.read_optional(f"/proc/{name}/numa_maps")
        except HostFSError:
            continue
        if text:
            size = node_bytes(text, node)
            if size:
                out[int(name)] = size
    return out


@dataclass(frozen=True)
class RasProbe:
    """What `doctor` reports about RAS on a host: tracefs, the cxl events, the memdevs and their poison lists."""

    tracing: str | None  # the mounted tracefs, or None
    events: tuple[str, ...]  # cxl trace events the kernel defines
    memdevs: tuple[str, ...]
    poison_lists: tuple[str, ...]  # memdevs with trigger_poison_list
    instance: bool  # cxltierd's tracefs instance exists (a daemon runs, or one did not stop cleanly)
    mailbox: tuple[tuple[str, bool, str], ...] = ()  # memdev, Get Health Info read, what it said or why not


def probe(fs: HostFS) -> RasProbe:
    """Read what RAS needs from the host (nothing is changed)."""
    tracing = TraceInstance.tracing_root(fs)
    memdevs = tuple(n for n in fs.listdir(CXL_DEVICES) if n.startswith("mem"))
    return RasProbe(
        tracing=tracing,
        events=TraceInstance.available(fs),
        memdevs=memdevs,
        poison_lists=tuple(m for m in memdevs if fs.exists(f"{CXL_DEVICES}/{m}/trigger_poison_list")),
        instance=tracing is not None and fs.is_dir(f"{tracing}/instances/{INSTANCE}"),
        mailbox=tuple(_mailbox(fs, m) for m in memdevs),
    )


def _mailbox(fs: HostFS, memdev: str) -> tuple[str, bool, str]:
    """A memdev's Get Health Info in one line, or why it cannot be read."""
    try:
        return memdev, True, describe(mailbox.read_health(fs, memdev))
    except mailbox.MailboxRefused as e:
        return memdev, False, str(e)
