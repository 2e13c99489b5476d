"""Hotplug: udev events on the cxl, dax, memory and node subsystems, debounced into one re-discovery.

The daemon adds an event source's fileno() to its selector and calls drain() when it is readable; a burst of
events (creating one region gives some 20 of them) becomes one re-discovery DEBOUNCE seconds after the last one.
The emulated backend feeds scripted events through the same Debouncer (cxltierd.emulate).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from cxltierd.errors import CxltierdError

log = logging.getLogger("cxltierd.discovery.hotplug")

SUBSYSTEMS: tuple[str, ...] = ("cxl", "dax", "memory", "node")
DEBOUNCE = 1.0


class EventSource(Protocol):
    """A source of hotplug events for the daemon's selector: readable fileno(), then drain() without blocking."""

    def fileno(self) -> int:
        """The descriptor that becomes readable when events are pending."""
        ...

    def drain(self) -> list[str]:
        """The pending events as one-line descriptions ("cxl add region0"); empty when none. Never blocks."""
        ...

    def close(self) -> None:
        """Release the descriptor; the source is not used afterwards."""
        ...


class Debouncer:
    """Collects events; due(now) is true once no event arrived for `delay` seconds. Time is passed in."""

    def __init__(self, delay: float = DEBOUNCE) -> None:
        self.delay = delay
        self.events: list[str] = []
        self.last: float | None = None

    def add(self, events: list[str], now: float) -> None:
        """Record events that arrived at `now`; an empty list changes nothing."""
        if events:
            self.events.extend(events)
            self.last = now

    def due(self, now: float) -> bool:
        """True when events are pending and none arrived for `delay` seconds."""
        return self.last is not None and now - self.last >= self.delay

    def wait(self, now: float) -> float | None:
        """Seconds until due, or None when nothing is pending."""
        return None if self.last is None else max(0.0, self.last + self.delay - now)

    def take(self) -> list[str]:
        """The pending events, oldest first; the debouncer is empty afterwards."""
        events, self.events, self.last = self.events, [], None
        return events


def describe(device: Any) -> str:
    """ "cxl remove region0", "memory offline memory110", "dax bind dax0.0"."""
    return f"{device.subsystem} {device.action} {device.sys_name}"


class UdevEvents:
    """pyudev netlink monitor (source 'udev') filtered on SUBSYSTEMS; non-blocking."""

    def __init__(self) -> None:
        try:
            import pyudev

            self.monitor: Any = pyudev.Monitor.from_netlink(pyudev.Context())
            for subsystem in SUBSYSTEMS:
                self.monitor.filter_by(subsystem)
            self.monitor.start()
        except Exception as e:  # no netlink (container without it), no libudev
            raise CxltierdError(
                f"udev monitor unavailable ({e}); hotplug follows the loop's periodic re-discovery"
            ) from None

    def fileno(self) -> int:
        """The netlink socket's descriptor."""
        return int(self.monitor.fileno())

    def drain(self) -> list[str]:
        """Every queued udev event, described."""
        out = []
        while (device := self.monitor.poll(timeout=0)) is not None:
            out.append(describe(device))
        return out

    def close(self) -> None:
        """Drop the monitor, which closes its netlink socket (pyudev's Monitor has no stop())."""
        self.monitor = None
