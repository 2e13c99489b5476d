"""The emulated host's hotplug as an event source, on the same path as udev on a real host.

The simulator records each scripted add/remove of a node in its hotplug_log and calls its listeners; this source
then has a byte in its pipe, so the daemon's select() wakes up exactly as for a udev event. drain() applies the new
records to the emulated tree copy (cxltierd.emulate.tree) and returns the udev-style event lines they produce, which
the daemon debounces into one re-discovery of that tree.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from cxltierd.emulate.memory import SimulatedMemory
from cxltierd.emulate.tree import apply_hotplug

log = logging.getLogger("cxltierd")


class ScriptedEvents:
    """Pipe-backed event source over a simulator's hotplug log and the tree copy it changes."""

    def __init__(self, sim: SimulatedMemory, root: Path) -> None:
        self.sim = sim
        self.root = root
        self.seen = 0
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        sim.on_hotplug.append(self._poke)

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe already says "readable"
            os.write(self.w, b"!")

    def fileno(self) -> int:
        """The pipe's read end: readable while records wait to be drained."""
        return self.r

    def drain(self) -> list[str]:
        """Apply the records since the last call to the tree; the events they made, one line each."""
        with contextlib.suppress(OSError):
            while os.read(self.r, 512):
                pass
        changes: list[tuple[str, int]] = []
        for rec in self.sim.hotplug_log[self.seen :]:
            if rec.ok:
                changes.append((rec.action, rec.node))
            else:
                log.warning("scripted hotplug at %gs: %s", rec.at, rec.message)
        self.seen = len(self.sim.hotplug_log)
        return apply_hotplug(self.root, changes)  # a storm of events costs each node's net change only

    def close(self) -> None:
        """Close the pipe and stop listening."""
        with contextlib.suppress(ValueError):
            self.sim.on_hotplug.remove(self._poke)
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)
