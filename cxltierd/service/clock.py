"""The daemon's clock: real monotonic time, or simulated time for tests and --fake-clock. Both wait in select()."""

from __future__ import annotations

import select
import time


class Clock:
    """Real time: monotonic now(), and wait() sleeps in select() on the given file descriptors."""

    def now(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()

    def wait(self, timeout: float, fds: list[int]) -> list[int]:
        """The descriptors that became readable within `timeout` seconds (none on timeout or a signal)."""
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            return []
        return ready


class FakeClock(Clock):
    """Simulated time for tests and --fake-clock: wait() returns at once, moving time forward."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        """The simulated time."""
        return self.t

    def wait(self, timeout: float, fds: list[int]) -> list[int]:
        """Readable descriptors now; when there are none, time jumps forward by `timeout`."""
        ready, _, _ = select.select(fds, [], [], 0)
        if not ready:
            self.t += max(0.0, timeout)
        return ready
