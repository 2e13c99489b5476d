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
