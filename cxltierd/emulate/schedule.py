"""The event schedule of the simulated memory system: everything that happens at a known scenario time.

Kinds of event: "start" and "exit" (a process), "remove" and "add"
(a node, from the scenario's hotplug script), "begin" and "done" (a queued copy), "birth" (a region a growing
process allocates). `due(t, procs)` hands out every event up to and including t exactly once, sorted by time, then
priority, then the order they were scheduled in; births are not stored but computed from the workloads.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

from cxltierd.emulate.store import Proc

# Event priorities at equal times: room is freed (exits, hotplug, completed copies) before it is taken.
EXIT, HOTPLUG, DONE, BEGIN, START, BIRTH = range(6)

Entry = tuple[float, int, int, str, Any]  # (time, priority, sequence, kind, payload)


class Schedule:
    """A time-ordered queue of events, plus the births of growing processes."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._seq = 0
        self._births_after: float | None = None

    def push(self, t: float, prio: int, kind: str, payload: Any) -> None:
        """Schedule an event of `kind` at scenario time t."""
        self._seq += 1
        heapq.heappush(self._heap, (t, prio, self._seq, kind, payload))

    def due(self, t: float, procs: Sequence[Proc]) -> list[Entry]:
        """The events up to and including t not handed out yet (births of `procs` included), in order."""
        events = []
        while self._heap and self._heap[0][0] <= t:
            events.append(heapq.heappop(self._heap))
        for p in procs:
            if p.work.growth is not None:
                for when, i in p.work.births(self._births_after, t):
                    self._seq += 1
                    events.append((when, BIRTH, self._seq, "birth", (p, i)))
        self._births_after = t
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        return events
