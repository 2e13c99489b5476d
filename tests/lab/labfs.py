"""DAMON sysfs access for lab tests, shared by conftest and the test modules (which cannot import conftest)."""

from __future__ import annotations

import errno
import time
from pathlib import Path


def damon_io(path: Path, value: str | None = None) -> str:
    """Read (or write) a DAMON sysfs file, retrying the EBUSY it answers while someone holds DAMON's sysfs mutex."""
    for attempt in range(100):
        try:
            if value is None:
                return path.read_text().strip()
            path.write_text(value)
            return value
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == 99:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def read(path: str | Path) -> str:
    """A sysfs value, retried while DAMON answers EBUSY."""
    return damon_io(Path(path))
