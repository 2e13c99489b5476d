"""The systemd notify protocol, spoken natively: one datagram per message to $NOTIFY_SOCKET.

A leading "@" names an abstract socket. Without $NOTIFY_SOCKET (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """A client of $NOTIFY_SOCKET (and of the watchdog settings) from the environment; sending never raises."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_usec = int(usec) if enabled else 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        """True when $NOTIFY_SOCKET names a socket."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is set."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, *lines: str) -> bool:
        """Send the lines as one datagram; False when not under systemd or the send failed (counted in `errors`)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall("\n".join(lines).encode())
            return True
        except OSError:
            self.errors += 1  # systemd gone or socket unwritable: never fatal
            return False

    def ready(self, status: str) -> bool:
        """Tell systemd that start-up is complete (READY=1) with a status line."""
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """Set the status line `systemctl status` shows."""
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        """Tell systemd that a reload has begun (RELOADING=1 with the monotonic time, as Type=notify-reload expects)."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def watchdog(self) -> bool:
        """Ping the watchdog (WATCHDOG=1)."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """Tell systemd that shutdown has begun (STOPPING=1)."""
        return self.send("STOPPING=1")
