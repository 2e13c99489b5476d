"""The copy engine of the simulated memory system: how a plan's moves become timed copies between nodes.

The engine is sequential: a plan's copies run one after another at the scenario's migration bandwidth, after any
still running (`busy_until`, scenario time). A move is accepted when its target will have room at the moment its
copy starts, that is once every copy queued before it is done (a demotion earlier in a plan makes room for a
promotion after it). A copy reserves its room on the target when it starts ("begin": it fails if a new region took
the room meanwhile) and frees its source when it completes ("done"); the region serves its accesses from the source
until then. A copy cancelled in flight (its process exited, a node went offline) is reported by the next `queue`.
Failures are counted in pages of PAGE_SIZE.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from cxltierd.emulate.sampler import Sampler
from cxltierd.emulate.schedule import BEGIN, DONE, Schedule
from cxltierd.emulate.store import VBASE, Proc, Store
from cxltierd.model import PAGE_SIZE, Move, Outcome, Plan, Transfer


@dataclass
class Copy:
    """One region's copy from src to dst; times are scenario time."""

    start: float  # the copy engine is sequential: a copy starts when the one before it is done
    done: float
    src: int
    dst: int
    size: int
    begun: bool = False  # room reserved on dst
    cancelled: bool = False


class CopyEngine:
    """Queues, starts, completes and cancels copies; keeps the migration accounting."""

    def __init__(self, store: Store, schedule: Schedule, sampler: Sampler, bandwidth: float) -> None:
        self.store = store
        self.schedule = schedule
        self.sampler = sampler
        self.bandwidth = bandwidth
        self.busy_until = 0.0  # the copy engine is busy until then
        self.migrated: Counter[tuple[int, int]] = Counter()
        self.failed: Counter[str] = Counter()
        self._late_failures: Counter[str] = Counter()  # copies cancelled in flight, reported by the next apply
        self._late_errors: list[str] = []

    def queue(self, plan: Plan, t0: float) -> Outcome:
        """Queue the plan's copies at scenario time t0, the time the simulation has reached."""
        t = begin = max(t0, self.busy_until)
        after = self._used_after_copies()
        failures: Counter[str] = Counter()
        why: Counter[tuple[str, str]] = Counter()
        transfers: Counter[tuple[int, int]] = Counter()
        moved: list[tuple[int, int]] = []
        for move in plan.moves:
            reason, detail, proc, i = self._check(move, after)
            if reason:
                pages = (proc.work.sizes[i] if proc is not None and i >= 0 else move.size) // PAGE_SIZE
                failures[reason] += pages
                why[(reason, detail)] += 1
                continue
            assert proc is not None
            size = proc.work.sizes[i]
            copy = Copy(t, t + size / self.bandwidth, move.src, move.dst, size)
            proc.copying[i] = copy
            if copy.start <= t0:
                self.begin(proc, i, copy)
            else:
                self.schedule.push(copy.start, BEGIN, "begin", (proc, i, copy))
            t = copy.done
            self.schedule.push(t, DONE, "done", (proc, i, copy))
            after[move.src] -= size
            after[move.dst] += size
            transfers[(move.src, move.dst)] += size
            moved.append(move.key)
        self.busy_until = t
        self.failed.update(failures)
        failures.update(self._late_failures)
        errors = [f"{count} move(s) failed ({reason}): {detail}" for (reason, detail), count in sorted(why.items())]
        errors += self._late_errors
        self._late_failures, self._late_errors = Counter(), []
        return Outcome(
            transfers=tuple(Transfer(s, d, b, b // PAGE_SIZE) for (s, d), b in sorted(transfers.items())),
            failures=dict(failures),
            seconds=t - begin,
            moved=tuple(moved),
            errors=tuple(errors),
        )

    def begin(self, p: Proc, i: int, c: Copy) -> None:
        """A queued copy starts: reserve its room on the target (taken meanwhile by a new region: it fails)."""
        if c.cancelled:
            return
        if self.store.free(c.dst) < c.size:
            c.cancelled = True
            del p.copying[i]
            self.failed["target_full"] += c.size // PAGE_SIZE
            self._late_failures["target_full"] += c.size // PAGE_SIZE
            error = f"node {c.dst} filled up before a queued copy of pid {p.pid} started"
            if error not in self._late_errors:
                self._late_errors.append(error)
            return
        self.store.used[c.dst] += c.size
        c.begun = True

    def complete(self, p: Proc, i: int, c: Copy, t: float) -> None:
        """A copy is done at t: the region serves from dst from now on and its room on src is freed."""
        if c.cancelled:
            return
        self.sampler.settle(p, i, t)
        self.store.used[c.src] -= c.size
        p.node[i] = c.dst
        del p.copying[i]
        self.migrated[(c.src, c.dst)] += c.size

    def cancel(self, c: Copy, reason: str, error: str) -> None:
        """Drop a copy in flight, releasing its reservation; counted as failed and reported by the next queue()."""
        c.cancelled = True
        if c.begun:
            self.store.used[c.dst] -= c.size
        self.failed[reason] += c.size // PAGE_SIZE
        self._late_failures[reason] += c.size // PAGE_SIZE
        if error not in self._late_errors:
            self._late_errors.append(error)

    def in_flight(self, start: float) -> dict[tuple[int, int], tuple[int, int, float, float]]:
        """Copies queued or running: key -> (src, dst, start, completion), times offset by `start`."""
        rs = self.store.region_size
        return {
            (p.pid, VBASE + i * rs): (c.src, c.dst, start + c.start, start + c.done)
            for p in self.store.procs
            for i, c in p.copying.items()
        }

    def _used_after_copies(self) -> dict[int, int]:
        """Managed bytes on each node once every queued copy is done, i.e. when the next copy would start."""
        after = dict(self.store.used)
        for p in self.store.procs:
            for c in p.copying.values():
                after[c.src] -= c.size
                if not c.begun:
                    after[c.dst] += c.size
        return after

    def _check(self, move: Move, after: Mapping[int, int]) -> tuple[str, str, Proc | None, int]:
        """(reason, detail, process, region index) for a move that cannot be queued; reason "" when it can.

        Copies run one after another, so every copy queued before this one has finished (and freed its source) by
        the time this one starts: the target's room is judged on `after`, the managed bytes per node by then."""
        st = self.store
        p = st.by_pid.get(move.pid)
        if p is None or not p.live:
            return "process_gone", f"pid {move.pid} is not running", None, -1
        i, rest = divmod(move.start - VBASE, st.region_size)
        if rest or not 0 <= i < p.work.n or p.node[i] < 0:
            return "not_present", f"pid {move.pid} has no region at {move.start:#x}", None, -1
        if move.dst not in st.live:
            return "node_gone", f"target node {move.dst} is not online", p, i
        if i in p.copying:
            return "busy", "region already being copied", p, i
        if p.node[i] != move.src:
            return "not_present", f"region not on its src node any more (on node {p.node[i]})", p, i
        if move.dst == move.src:
            return "other", "src and dst are the same node", p, i
        if st.capacity[move.dst] - st.unmanaged[move.dst] - after[move.dst] < p.work.sizes[i]:
            return "target_full", f"no room on node {move.dst}", p, i
        return "", "", p, i
