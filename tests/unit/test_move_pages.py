"""The move_pages engine against a fake syscall layer (exact calls), and against this host's real kernel."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from array import array

from cxltierd.engines import syscalls
from cxltierd.engines.move_pages import MovePagesEngine
from cxltierd.model import Move, Plan

P = 4096


class FakePages:
    """Pages of processes on nodes; records every call."""

    def __init__(self, placement: dict[int, dict[int, int]], fail: dict[int, int] | None = None):
        self.placement = placement  # pid -> {page address: node}
        self.fail = fail or {}  # address -> negative errno for move
        self.calls: list[tuple[str, int, int]] = []
        self.gone: set[int] = set()

    def query(self, pid, addrs):
        self.calls.append(("query", pid, len(addrs)))
        if pid in self.gone:
            raise syscalls.PagesError(pid, errno.ESRCH, "query")
        pages = self.placement[pid]
        return array("i", [pages.get(a, -errno.ENOENT) for a in addrs])

    def move_pages(self, pid, addrs, node, flags=syscalls.MPOL_MF_MOVE):
        self.calls.append(("move", pid, len(addrs)))
        out = array("i")
        for a, n in zip(addrs, node, strict=True):
            if a in self.fail:
                out.append(self.fail[a])
            else:
                self.placement[pid][a] = n
                out.append(n)
        return out


def pages_of(start, n, node):
    return {start + i * P: node for i in range(n)}


def test_one_query_and_one_move_call_per_process():
    placement = {10: pages_of(0x1000000, 512, 2) | pages_of(0x2000000, 512, 2), 11: pages_of(0x1000000, 512, 0)}
    fake = FakePages(placement)
    plan = Plan(
        moves=(
            Move(10, 0x1000000, 512 * P, 2, 0, "promote"),
            Move(10, 0x2000000, 512 * P, 2, 1, "promote"),
            Move(11, 0x1000000, 512 * P, 0, 2, "demote"),
        )
    )
    out = MovePagesEngine(pages=fake, page_size=P).apply(plan, now=0)
    assert fake.calls == [("query", 10, 1024), ("move", 10, 1024), ("query", 11, 512), ("move", 11, 512)]
    assert {(t.src, t.dst): t.pages for t in out.transfers} == {(2, 0): 512, (2, 1): 512, (0, 2): 512}
    assert set(out.moved) == {(10, 0x1000000), (10, 0x2000000), (11, 0x1000000)}
    assert not out.failures


def test_pages_already_there_or_absent_are_not_moved_or_counted():
    placement = {10: pages_of(0x1000000, 100, 0) | pages_of(0x1000000 + 100 * P, 100, 2)}  # 312 pages not present
    fake = FakePages(placement)
    out = MovePagesEngine(pages=fake, page_size=P).apply(Plan(moves=(Move(10, 0x1000000, 512 * P, 2, 0, "p"),)), 0)
    assert fake.calls[1] == ("move", 10, 100)
    assert [(t.src, t.dst, t.pages) for t in out.transfers] == [(2, 0, 100)]
    assert out.moved == ((10, 0x1000000),) and not out.failures


def test_per_page_failures_by_reason():
    placement = {10: pages_of(0x1000000, 512, 2)}
    fail = {0x1000000: -errno.EBUSY, 0x1000000 + P: -errno.ENOMEM, 0x1000000 + 2 * P: -errno.EACCES}
    out = MovePagesEngine(pages=FakePages(placement, fail), page_size=P).apply(
        Plan(moves=(Move(10, 0x1000000, 512 * P, 2, 0, "p"),)), 0
    )
    assert out.failures == {"busy": 1, "target_full": 1, "permission": 1}
    assert out.transfers[0].pages == 509


def test_process_gone_costs_only_its_moves():
    placement = {10: pages_of(0x1000000, 512, 2), 11: pages_of(0x1000000, 512, 2)}
    fake = FakePages(placement)
    fake.gone.add(10)
    out = MovePagesEngine(pages=fake, page_size=P).apply(
        Plan(moves=(Move(10, 0x1000000, 512 * P, 2, 0, "p"), Move(11, 0x1000000, 512 * P, 2, 0, "p"))), 0
    )
    assert out.failures == {"process_gone": 512}
    assert out.moved == ((11, 0x1000000),)
    assert out.errors == ("pid 10 exited during migration: 1 moves dropped",)


def test_real_kernel_query_and_move_on_this_host():
    """This host's own kernel: move our own pages to node 0 (always present), query them, and see ENODEV."""
    size = 8 << 20
    buf = mmap.mmap(-1, size)
    for i in range(0, size, P):
        buf[i] = 1
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    try:
        addrs = syscalls.page_addresses(addr, size)
        assert set(syscalls.query(os.getpid(), addrs)) == {0}
        out = MovePagesEngine().apply(Plan(moves=(Move(os.getpid(), addr, size, 0, 0, "same node"),)), 0)
        assert out.transfers == () and out.moved == ((os.getpid(), addr),)  # already there: nothing to move
        try:
            syscalls.move_pages(os.getpid(), addrs[:4], 4095)
            raise AssertionError("move to a node that does not exist succeeded")
        except syscalls.PagesError as e:
            assert e.errno in (errno.ENODEV, errno.EINVAL) and syscalls.reason(e.errno) == "node_gone"
    finally:
        del addrs
        buf.close()


class FakeKernel:
    """move_pages(2) as the kernel does it, behind syscalls._call: pages queued for one target node migrate
    together; when some of them cannot move (`stuck`), the call returns how many pages were not migrated and stops,
    leaving the statuses of that list and of every later page unwritten."""

    def __init__(self, placement: dict[int, int], stuck: set[int]) -> None:
        self.placement = placement
        self.stuck = stuck
        self.calls: list[tuple[int, int | None]] = []  # (pages, target node of the first page; None: query)

    def __call__(self, nr, pid, count, pages, nodes, status, flags) -> int:
        n = count.value
        addrs = [ctypes.c_uint64.from_address(pages.value + 8 * i).value for i in range(n)]
        out = [ctypes.c_int.from_address(status.value + 4 * i) for i in range(n)]
        if not nodes.value:
            self.calls.append((n, None))
            for a, st in zip(addrs, out, strict=True):
                st.value = self.placement.get(a, -errno.ENOENT)
            return 0
        dst = [ctypes.c_int.from_address(nodes.value + 4 * i).value for i in range(n)]
        self.calls.append((n, dst[0]))
        pending: list[int] = []

        def flush() -> int:
            failed = [i for i in pending if addrs[i] in self.stuck]
            for i in pending:
                if addrs[i] not in self.stuck:
                    self.placement[addrs[i]] = dst[i]
            if failed:
                return len(failed)
            for i in pending:
                out[i].value = dst[i]
            pending.clear()
            return 0

        for i, a in enumerate(addrs):
            if pending and dst[i] != dst[pending[0]] and (left := flush()):
                return left + n - i
            if self.placement.get(a) == dst[i]:
                if left := flush():
                    return left + n - i
                out[i].value = dst[i]
            else:
                pending.append(i)
        return flush()


def kernel(monkeypatch, placement, stuck=()) -> FakeKernel:
    k = FakeKernel(placement, set(stuck))
    monkeypatch.setattr(syscalls, "_syscall", lambda: k)
    monkeypatch.setattr(syscalls, "_number", lambda: 279)
    return k


def test_a_page_the_kernel_cannot_migrate_is_a_failure_not_an_arrival_on_node_0(monkeypatch):
    # node 0 is the target, the status array starts out as zeros: unwritten statuses must not read as "on node 0"
    k = kernel(monkeypatch, pages_of(0x1000000, 8, 2), stuck={0x1000000 + 3 * P})
    out = MovePagesEngine(page_size=P).apply(Plan(moves=(Move(10, 0x1000000, 8 * P, 2, 0, "p"),)), 0)
    assert k.placement[0x1000000 + 3 * P] == 2 and sum(1 for n in k.placement.values() if n == 0) == 7
    assert [(t.src, t.dst, t.pages) for t in out.transfers] == [(2, 0, 7)]  # the 7 that arrived (a query tells)
    assert out.failures == {"busy": 1}
    assert out.moved == ((10, 0x1000000),)  # most of the region arrived


def test_move_calls_are_cut_where_the_target_changes_and_at_the_batch_size():
    assert syscalls._runs(array("i", [1, 1, 2, 2, 2, 1]), 6) == [(0, 2), (2, 3), (5, 1)]
    assert syscalls._runs(None, 6) == [(0, 6)]
    assert syscalls._runs(array("i", [4] * (syscalls.BATCH_PAGES + 1)), syscalls.BATCH_PAGES + 1) == [
        (0, syscalls.BATCH_PAGES),
        (syscalls.BATCH_PAGES, 1),
    ]


def test_a_demotion_that_fails_does_not_abort_the_promotion_after_it(monkeypatch):
    # an exchange: demote a region off node 0 (one page stuck), then promote another onto node 0
    placement = pages_of(0x1000000, 4, 0) | pages_of(0x2000000, 4, 2)
    k = kernel(monkeypatch, placement, stuck={0x1000000})
    plan = Plan(moves=(Move(10, 0x1000000, 4 * P, 0, 2, "demote"), Move(10, 0x2000000, 4 * P, 2, 0, "promote")))
    out = MovePagesEngine(page_size=P).apply(plan, 0)
    assert [c for c in k.calls if c[1] is not None] == [(4, 2), (4, 0)]  # one call per target node
    assert {(t.src, t.dst): t.pages for t in out.transfers} == {(0, 2): 3, (2, 0): 4}
    assert out.failures == {"busy": 1}
    assert set(out.moved) == {(10, 0x1000000), (10, 0x2000000)}
