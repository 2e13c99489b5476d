"""move_pages(2) through ctypes: batched, never one call per page. The only place cxltierd makes that syscall.

`move_pages(pid, addrs, node)` moves every page in `addrs` (an array of page addresses) to `node` with
MPOL_MF_MOVE; `query(pid, addrs)` asks where the pages are (nodes=NULL). Both return the per-page status array:
a node id, or a negative errno. A call-level failure raises PagesError carrying the errno (ESRCH when the process
is gone, EPERM, ...). Status values map onto the failure reasons of cxltierd_migration_failures_total via `reason()`.

A move call that returns a positive count (pages the kernel could not migrate, e.g. still referenced after its
retries) leaves the status of its failed batch and of every later page unwritten, and stops there. So each run of
pages bound for one node is its own call (a failure costs that run only), and after such a return the pages left
unwritten are queried: those on their target arrived, the others get -EBUSY (not migrated).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from array import array

from cxltierd.errors import CxltierdError

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MPOL_MF_MOVE = 2
MPOL_MF_MOVE_ALL = 4
SYS_MOVE_PAGES = {"x86_64": 279, "aarch64": 239, "ppc64le": 301, "s390x": 310, "riscv64": 239}
SYS_MIGRATE_PAGES = {"x86_64": 256, "aarch64": 238, "ppc64le": 258, "s390x": 287, "riscv64": 238}
BATCH_PAGES = 65536  # pages per syscall: large batches are several times faster than small ones

_REASONS = {
    errno.ENOMEM: "target_full",
    errno.ESRCH: "process_gone",
    errno.EPERM: "permission",
    errno.EACCES: "permission",
    errno.EBUSY: "busy",
    errno.ENOENT: "not_present",
    errno.EFAULT: "not_present",
    errno.ENODEV: "node_gone",
    errno.EINVAL: "node_gone",
    errno.EIO: "io_error",
}


class PagesError(CxltierdError):
    """A failed move_pages(2) call as a whole, with the pid and the errno."""

    def __init__(self, pid: int, err: int, what: str) -> None:
        super().__init__(f"move_pages({what}) on pid {pid}: {os.strerror(err)}")
        self.pid = pid
        self.errno = err


def reason(err: int) -> str:
    """Failure reason for an errno (positive) or a negative per-page status."""
    return _REASONS.get(abs(err), "other")


_libc: ctypes.CDLL | None = None


def _syscall() -> ctypes._NamedFuncPointer:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn = _libc.syscall
    fn.restype = ctypes.c_long
    return fn


def _number() -> int:
    machine = platform.machine()
    if machine not in SYS_MOVE_PAGES:
        raise CxltierdError(f"move_pages: unsupported architecture {machine}")
    return SYS_MOVE_PAGES[machine]


UNSET = -(1 << 20)  # a status the kernel never writes (node ids are >= 0, errnos above -4096)


def _runs(nodes: array | None, total: int) -> list[tuple[int, int]]:
    """(offset, count) slices of at most BATCH_PAGES pages, cut where the target node changes (query: no cut)."""
    out = []
    off = 0
    while off < total:
        end = min(off + BATCH_PAGES, total)
        if nodes is not None:
            end = _run_end(nodes, off, end)
        out.append((off, end - off))
        off = end
    return out


def _run_end(nodes: array, off: int, end: int) -> int:
    """The end of the run of nodes[off]'s value starting at `off`, at most `end` (C-level counts, no page loop)."""
    v = nodes[off]
    lo, hi = off + 1, end  # nodes[off:lo] is one run; the run ends at or before hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if nodes[off:mid].count(v) == mid - off:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _call(pid: int, addrs: array, nodes: array | None, flags: int) -> array:
    """move_pages calls over `addrs`, one per BATCH_PAGES slice (for a move: per run of one target node); returns
    the status of every page (see the module docstring for a call that could not migrate every page)."""
    status = array("i", [UNSET]) * len(addrs) if nodes is not None else array("i", bytes(4 * len(addrs)))
    if not addrs:
        return status
    nr = _number()
    fn = _syscall()
    pages_buf = (ctypes.c_uint64 * len(addrs)).from_buffer(addrs)
    status_buf = (ctypes.c_int * len(status)).from_buffer(status)
    nodes_buf = (ctypes.c_int * len(nodes)).from_buffer(nodes) if nodes is not None else None
    base_pages = ctypes.addressof(pages_buf)
    base_status = ctypes.addressof(status_buf)
    base_nodes = ctypes.addressof(nodes_buf) if nodes_buf is not None else 0
    for off, count in _runs(nodes, len(addrs)):
        rc = fn(
            ctypes.c_long(nr),
            ctypes.c_long(pid),
            ctypes.c_ulong(count),
            ctypes.c_void_p(base_pages + 8 * off),
            ctypes.c_void_p(base_nodes + 4 * off if base_nodes else 0),
            ctypes.c_void_p(base_status + 4 * off),
            ctypes.c_int(flags),
        )
        if rc < 0:
            err = ctypes.get_errno()
            raise PagesError(pid, err, "query" if nodes is None else "move")
        if rc > 0 and nodes is not None:
            _fill_unwritten(pid, addrs, nodes, status, off, count)
    return status


def _fill_unwritten(pid: int, addrs: array, nodes: array, status: array, off: int, count: int) -> None:
    """After a move call that left statuses unwritten: query those pages; on their target they arrived, the others
    were not migrated (-EBUSY)."""
    idx = [i for i in range(off, off + count) if status[i] == UNSET]
    if not idx:
        return
    where = _call(pid, array("Q", (addrs[i] for i in idx)), None, 0)
    for i, node in zip(idx, where, strict=True):
        status[i] = node if node == nodes[i] else -errno.EBUSY


def page_addresses(start: int, size: int, page_size: int = PAGE_SIZE) -> array:
    """Addresses of every page in [start, start + size)."""
    first = start - start % page_size
    return array("Q", range(first, start + size, page_size))


def query(pid: int, addrs: array) -> array:
    """Node of each page (or a negative errno: -ENOENT for a page not present)."""
    return _call(pid, addrs, None, 0)


def move_pages(pid: int, addrs: array, node: int | array, flags: int = MPOL_MF_MOVE) -> array:
    """Move the pages to `node` (one node for all, or an array of nodes); per-page status."""
    nodes = node if isinstance(node, array) else array("i", [node]) * len(addrs)
    return _call(pid, addrs, nodes, flags)


def migrate_pages(pid: int, src: int, dst: int) -> int:
    """Move every page of process `pid` on node `src` to node `dst` (migrate_pages(2), what `migratepages` does);
    the number of pages that could not be moved. Raises PagesError (ESRCH: the process is gone)."""
    machine = platform.machine()
    if machine not in SYS_MIGRATE_PAGES:
        raise CxltierdError(f"migrate_pages: unsupported architecture {machine}")
    top = max(src, dst) + 1
    words = (top + 63) // 64
    old = (ctypes.c_ulong * words)()
    new = (ctypes.c_ulong * words)()
    old[src // 64] |= 1 << (src % 64)
    new[dst // 64] |= 1 << (dst % 64)
    fn = _syscall()
    rc = fn(
        ctypes.c_long(SYS_MIGRATE_PAGES[machine]),
        ctypes.c_long(pid),
        ctypes.c_ulong(words * 64),
        ctypes.byref(old),
        ctypes.byref(new),
    )
    if rc < 0:
        raise PagesError(pid, ctypes.get_errno(), f"migrate {src}->{dst}")
    return int(rc)
