"""The scenario's hotplug script played on the simulated memory system: nodes going offline and coming back.

Removing a node works the way the kernel offlines memory: every region on it is evacuated to the nearest tier with
room (same tier first, then slower, then faster), copies from or to it are cancelled, and only then does it leave
the live nodes. When the other nodes cannot take all of its regions, nothing moves and the node stays online. An
added node comes back empty. Every scripted event, done or refused, is appended to `log` (times on the caller's
clock), which the emulated backend replays on its sysfs tree (cxltierd.emulate.tree).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cxltierd.emulate.copies import CopyEngine
from cxltierd.emulate.sampler import Sampler
from cxltierd.emulate.store import Store
from cxltierd.units import format_size


@dataclass(frozen=True)
class HotplugRecord:
    """What a scripted hotplug event did."""

    at: float
    node: int
    action: str  # "remove" or "add"
    ok: bool
    evacuated: Mapping[int, int] = field(default_factory=dict)  # target node -> bytes the kernel moved off
    message: str = ""


class Hotplug:
    """Removes and adds simulated nodes; keeps the log of what it did and the bytes it evacuated."""

    def __init__(self, store: Store, copies: CopyEngine, sampler: Sampler, start: float) -> None:
        """`start`: the caller's clock value at scenario time 0 (for the log's times)."""
        self.store = store
        self.copies = copies
        self.sampler = sampler
        self.start = start
        self.log: list[HotplugRecord] = []
        self.listeners: list[Callable[[], None]] = []  # called after each new record (the scripted event source)
        self.evacuated: Counter[tuple[int, int]] = Counter()  # (src, dst) -> bytes moved off a removed node

    def _record(self, rec: HotplugRecord) -> None:
        self.log.append(rec)
        for listener in self.listeners:
            listener()

    def remove_node(self, node: int, t: float) -> None:
        """Offline a node the way the kernel does: evacuate its regions (nearest tier with room), then drop it."""
        st = self.store
        if node not in st.live:
            return
        order = st.evacuation_order(node)
        victims = [(p, i) for p in st.procs if p.live for i in range(p.high) if p.node[i] == node]
        free = {n: st.free(n) for n in order}
        for c in (c for q in st.procs for c in q.copying.values()):
            if c.src == node and c.begun:
                free[c.dst] = free.get(c.dst, 0) + c.size  # the reservation will be released
        plan: list[int] = []
        for p, i in victims:
            size = p.work.sizes[i]
            dst = next((n for n in order if free[n] >= size), None)
            if dst is None:
                need = format_size(sum(q.work.sizes[k] for q, k in victims))
                why = f"offline of node {node} failed: no room elsewhere for its {need} of process memory"
                self._record(HotplugRecord(self.start + t, node, "remove", False, message=why))
                return
            free[dst] -= size
            plan.append(dst)
        for p in st.procs:
            for i, c in list(p.copying.items()):
                if node in (c.src, c.dst):
                    self.copies.cancel(c, "node_gone", f"node {node} went offline during migration")
                    del p.copying[i]
        moved: Counter[int] = Counter()
        for (p, i), dst in zip(victims, plan, strict=True):
            size = p.work.sizes[i]
            self.sampler.settle(p, i, t)
            st.used[node] -= size
            st.used[dst] += size
            p.node[i] = dst
            moved[dst] += size
            self.evacuated[(node, dst)] += size
        st.live.discard(node)
        self._record(HotplugRecord(self.start + t, node, "remove", True, dict(moved)))

    def add_node(self, node: int, t: float) -> None:
        """Bring a removed node back online, empty."""
        st = self.store
        if node in st.live:
            return
        st.live.add(node)
        st.unmanaged[node] = 0
        self._record(HotplugRecord(self.start + t, node, "add", True))
