"""The move_pages engine: cxltierd moves each planned region itself with batched move_pages(2).

Per process, one query call finds where every page of the planned regions is; pages not yet on their target
then move in one call with a per-page node array (batched by the syscall layer in BATCH_PAGES slices). Per-page
status decides what moved (counted per real source node, so the figures agree with the kernel's
pgmigrate_success) and what failed, by reason. A process that exits mid-migration (ESRCH), or one we may not
touch (EPERM), costs that process's moves only; the loop goes on.
"""

from __future__ import annotations

import errno
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from cxltierd.engines import syscalls
from cxltierd.model import Gates, Move, Outcome, Plan, Transfer
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology


class Pages(Protocol):
    """The syscall layer (cxltierd.engines.syscalls), injectable for tests."""

    def query(self, pid: int, addrs: array) -> array:
        """The node of each page in `addrs`, or a negative errno per page."""
        ...

    def move_pages(self, pid: int, addrs: array, node: int | array, flags: int = ...) -> array:
        """Move the pages to `node` (one node, or one per page); the per-page status as for query()."""
        ...


class MovePagesEngine:
    """Migrator executing a Plan with move_pages(2) per process; reports bytes moved and pages failed by reason."""

    name = "move_pages"
    kernel_executed = False

    def __init__(
        self, pages: Pages | None = None, flags: int = syscalls.MPOL_MF_MOVE, page_size: int = syscalls.PAGE_SIZE
    ):
        self.pages: Any = pages if pages is not None else syscalls
        self.flags = flags
        self.page_size = page_size

    def gate(self, gates: Gates) -> None:
        """Only kernel-executed engines are gated."""

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Nothing to set: this engine writes no kernel setting."""
        pass

    def stop(self) -> None:
        """Nothing to release."""
        pass

    def apply(self, plan: Plan, now: float, clock: Callable[[], float] = time.monotonic) -> Outcome:
        """Execute every move of the plan; bytes moved per (source, target) node and pages failed per reason."""
        started = clock()
        moved_bytes: Counter[tuple[int, int]] = Counter()
        failures: Counter[str] = Counter()
        moved_keys: list[tuple[int, int]] = []
        errors: list[str] = []
        by_pid: dict[int, list[Move]] = {}
        for m in plan.moves:
            by_pid.setdefault(m.pid, []).append(m)
        for pid, moves in by_pid.items():
            try:
                self._move_process(pid, moves, moved_bytes, failures, moved_keys)
            except syscalls.PagesError as e:
                pages = sum(m.size for m in moves) // self.page_size
                why = syscalls.reason(e.errno)
                failures[why] += pages
                if e.errno == errno.ESRCH:
                    errors.append(f"pid {pid} exited during migration: {len(moves)} moves dropped")
                else:
                    errors.append(f"pid {pid}: {e}")
        transfers = tuple(Transfer(s, d, b, b // self.page_size) for (s, d), b in sorted(moved_bytes.items()))
        return Outcome(
            transfers=transfers,
            failures=dict(failures),
            seconds=clock() - started,
            moved=tuple(moved_keys),
            errors=tuple(errors),
        )

    def _move_process(
        self,
        pid: int,
        moves: list[Move],
        moved_bytes: Counter[tuple[int, int]],
        failures: Counter[str],
        moved_keys: list[tuple[int, int]],
    ) -> None:
        """One query and one (batched) move call for all of a process's moves.

        A region whose pages all sit on one node that is not its target (the usual case) goes whole, with C-level
        array operations only; a mixed one is sorted page by page. Per-page Python work would cost more than the
        kernel's migration of a 4 KiB page between plain RAM nodes.
        """
        addrs = array("Q")
        spans = []
        for m in moves:
            a = syscalls.page_addresses(m.start, m.size, self.page_size)
            spans.append((m, len(addrs), len(a)))
            addrs.extend(a)
        where = self.pages.query(pid, addrs)
        todo = array("Q")
        nodes = array("i")
        parts: list[tuple[Move, int, int, int, array]] = []  # (move, first page, first todo, count, todo index)
        for m, off, n in spans:
            cur = where[off : off + n]
            if n and cur[0] >= 0 and cur[0] != m.dst and cur.count(cur[0]) == n:
                parts.append((m, off, len(todo), n, array("l")))  # whole region from one node
                todo.extend(addrs[off : off + n])
                nodes.extend(array("i", [m.dst]) * n)
                continue
            index = array("l", (i for i in range(off, off + n) if where[i] >= 0 and where[i] != m.dst))
            parts.append((m, off, len(todo), len(index), index))
            todo.extend(addrs[i] for i in index)
            nodes.extend(array("i", [m.dst]) * len(index))
        status = self.pages.move_pages(pid, todo, nodes, self.flags) if todo else array("i")
        for (m, off, n), (_, _, first, count, index) in zip(spans, parts, strict=True):
            got = status[first : first + count]
            arrived = got.count(m.dst)
            if not index and count:  # a whole region from where[off]
                moved_bytes[(where[off], m.dst)] += arrived * self.page_size
                if arrived != count:
                    self._failed(got, m.dst, failures)
                present = count
                on_dst = arrived
            else:
                for j, i in enumerate(index):
                    if got[j] == m.dst:
                        moved_bytes[(where[i], m.dst)] += self.page_size
                self._failed(got, m.dst, failures)
                cur = where[off : off + n]
                present = n - sum(1 for x in cur if x < 0)
                on_dst = cur.count(m.dst) + arrived
            if present and on_dst * 2 >= present:
                moved_keys.append(m.key)

    @staticmethod
    def _failed(status: array, dst: int, failures: Counter[str]) -> None:
        """Count the pages of `status` that did not arrive on dst, by reason."""
        for st in status:
            if st == dst:
                continue
            if st < 0:
                failures[syscalls.reason(st)] += 1
            else:
                failures["other"] += 1  # landed elsewhere (e.g. the target filled up and the kernel fell back)
