"""perf_event_open(2) through ctypes for the memory-bandwidth counters (cxltierd.discovery.pmu), and the meter that
turns their counts into bytes per second per node. The only place cxltierd makes that syscall.

A counter is opened system-wide on one CPU (pid -1: uncore and CXL PMUs count the device, not a task), enabled at
once, and read as one u64. The meter reads every counter at each sample and reports, per node, the bytes per second
since the previous sample (reads and writes together); the first sample only sets the baseline. Time is passed in.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Callable, Sequence

from cxltierd.discovery.pmu import Counter
from cxltierd.errors import CxltierdError

SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "ppc64le": 319, "s390x": 331, "riscv64": 241}
PERF_FLAG_FD_CLOEXEC = 8
ATTR_SIZE = 72  # PERF_ATTR_SIZE_VER1: up to config2, all these counters need


class PerfAttr(ctypes.Structure):
    """struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),  # disabled, inherit, ... bits: all 0 (counting from the open on)
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
    ]


class PerfError(CxltierdError):
    """perf_event_open failed for a counter (errno kept)."""

    def __init__(self, message: str, errno_: int = 0) -> None:
        super().__init__(message)
        self.errno = errno_


def open_counter(c: Counter) -> int:
    """Open one counter system-wide on its CPU; returns the fd. Raises PerfError."""
    nr = SYS_PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise PerfError(f"perf_event_open: unsupported architecture {platform.machine()}")
    attr = PerfAttr(type=c.type, size=ATTR_SIZE, config=c.config, config1=c.config1, config2=c.config2)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(
        ctypes.c_long(nr), ctypes.byref(attr), ctypes.c_int(-1), ctypes.c_int(c.cpu), ctypes.c_int(-1),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )  # fmt: skip
    if fd < 0:
        err = ctypes.get_errno()
        raise PerfError(f"perf_event_open {c.pmu}/{c.event} on CPU {c.cpu}: {os.strerror(err)}", err)
    return int(fd)


def read_counter(fd: int) -> int:
    """The counter's value (u64)."""
    data = os.read(fd, 8)
    if len(data) != 8:
        raise PerfError(f"perf counter read returned {len(data)} bytes")
    return int.from_bytes(data, sys.byteorder)


class BandwidthMeter:
    """Bytes per second per node from a set of counters (see the module docstring). `opener`/`reader`/`closer`
    default to the real syscalls; tests pass fakes."""

    def __init__(
        self,
        counters: Sequence[Counter],
        opener: Callable[[Counter], int] = open_counter,
        reader: Callable[[int], int] = read_counter,
        closer: Callable[[int], None] = os.close,
    ) -> None:
        self.counters = list(counters)
        self.opener, self.reader, self.closer = opener, reader, closer
        self.fds: list[tuple[Counter, int]] = []
        self.errors: list[str] = []
        self.last: tuple[float, list[int]] | None = None

    def open(self) -> list[str]:
        """Open every counter; those that fail are left out. Returns one line per failure."""
        for c in self.counters:
            try:
                self.fds.append((c, self.opener(c)))
            except (PerfError, OSError) as e:
                self.errors.append(str(e))
        return self.errors

    def nodes(self) -> tuple[int, ...]:
        """The nodes with at least one open counter."""
        return tuple(sorted({c.node for c, _ in self.fds}))

    def sample(self, now: float) -> dict[int, float]:
        """Bytes/s per node since the previous sample; empty on the first one, without open counters, or when a
        read fails (the next sample starts a new baseline)."""
        if not self.fds:
            return {}
        try:
            values = [self.reader(fd) for _, fd in self.fds]
        except (PerfError, OSError) as e:
            self.errors.append(str(e))
            self.last = None
            return {}
        last, self.last = self.last, (now, values)
        if last is None or now <= last[0]:
            return {}
        dt = now - last[0]
        out: dict[int, float] = {}
        for (c, _), v, v0 in zip(self.fds, values, last[1], strict=True):
            delta = (v - v0) % (1 << 64)
            out[c.node] = out.get(c.node, 0.0) + delta * c.bytes_per_count / dt
        return out

    def close(self) -> None:
        """Close every open counter."""
        for _, fd in self.fds:
            with contextlib.suppress(OSError):
                self.closer(fd)
        self.fds = []
