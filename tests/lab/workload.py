"""A small victim process for lab tests: N MiB of anonymous memory bound to one NUMA node, with a hot prefix.

usage: workload.py --node N --mib M [--hot-mib H] [--warm-mib W] [--warm-every E] [--sleep-ms S] [--cpu C]
                   [--cgroup PATH] [--unbind] [--shift-mib K]

Only the buffer is bound (mbind(2)), not the interpreter: its stack and heap stay on the CPU nodes, which keeps it
clear of the QEMU 10.0 TCG crash where a wide store spans a RAM page and an emulated CXL page (tests/lab/README.md).
Transparent huge pages are disabled on the buffer, so every count below is in base pages. After touching the whole
buffer the program prints one JSON line {"pid", "addr", "length", "page_size", "node", "hot_length"} and then
re-touches the first H MiB (one byte per page) forever, sleeping S ms between passes. The sleep matters: under TCG
DAMON only sees accessed bits when the CPU context-switches. Stop it with SIGKILL. --warm-mib W: the W MiB after the
hot range are warm, touched on every E-th pass only (--warm-every, default 4); the JSON line then has "warm_length".

--cgroup PATH moves the process into the cgroup v2 group PATH (relative to /sys/fs/cgroup) before the buffer is
allocated, so the buffer is charged to that memory cgroup (a DAMOS memcg filter matches it; charges do not follow a
process that changes cgroup later). --shift-mib K: each SIGUSR1 moves the hot range K MiB further into the buffer
(wrapping around its end); the pages it moves onto were cold until then, so they are where the buffer was touched.
--unbind drops the buffer's MPOL_BIND once it is touched (MPOL_DEFAULT): the pages stay where they are, but NUMA
balancing may now migrate them (it skips VMAs with a strict bind policy).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import signal
import sys
import time

SYS_MBIND = 237
MPOL_DEFAULT = 0
MPOL_BIND = 2
MPOL_MF_STRICT = 1


def mbind(addr: int, length: int, node: int | None) -> None:
    """Bind [addr, addr + length) to `node` (MPOL_BIND), or reset it to MPOL_DEFAULT (node None); raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    if node is None:
        mode, mask, maxnode, flags = MPOL_DEFAULT, None, 0, 0
    else:
        words = node // 64 + 1
        mask = (ctypes.c_ulong * words)()
        mask[node // 64] = 1 << (node % 64)
        mode, maxnode, flags = MPOL_BIND, words * 64 + 1, MPOL_MF_STRICT
    rc = libc.syscall(
        ctypes.c_long(SYS_MBIND),
        ctypes.c_void_p(addr),
        ctypes.c_ulong(length),
        ctypes.c_long(mode),
        mask,
        ctypes.c_ulong(maxnode),
        ctypes.c_uint(flags),
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mbind to node {node}: {os.strerror(err)}")


def touch(view: memoryview, length: int, page: int) -> None:
    """Write one byte into every page of the first `length` bytes (a single strided C-level store loop)."""
    pages = (length + page - 1) // page
    if pages:
        view[0 : pages * page : page] = b"\x01" * pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", type=int, required=True, help="NUMA node for the buffer")
    ap.add_argument("--mib", type=int, required=True, help="buffer size in MiB")
    ap.add_argument("--hot-mib", type=int, default=0, help="size of the hot prefix in MiB (default 0: nothing hot)")
    ap.add_argument("--warm-mib", type=int, default=0, help="size of the warm range after the hot one in MiB")
    ap.add_argument("--warm-every", type=int, default=4, help="touch the warm range on every E-th pass")
    ap.add_argument("--sleep-ms", type=float, default=1.0, help="sleep between passes over the hot prefix")
    ap.add_argument("--cpu", type=int, help="pin to this CPU")
    ap.add_argument("--cgroup", help="join this cgroup v2 group (path below /sys/fs/cgroup) before allocating")
    ap.add_argument("--unbind", action="store_true", help="reset the buffer to MPOL_DEFAULT once it is touched")
    ap.add_argument("--shift-mib", type=int, default=0, help="SIGUSR1 moves the hot range this many MiB on")
    args = ap.parse_args(argv)
    if args.hot_mib + args.warm_mib > args.mib:
        ap.error("--hot-mib plus --warm-mib must not exceed --mib")
    if args.warm_every < 1:
        ap.error("--warm-every must be at least 1")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.cgroup:
        with open(f"/sys/fs/cgroup/{args.cgroup.strip('/')}/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    page = mmap.PAGESIZE
    length = args.mib << 20
    buf = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    buf.madvise(mmap.MADV_NOHUGEPAGE)
    anchor = ctypes.c_char.from_buffer(buf)  # keeps the mapping exported (and alive) for the process lifetime
    addr = ctypes.addressof(anchor)
    mbind(addr, length, args.node)
    view = memoryview(buf)
    touch(view, length, page)
    if args.unbind:
        mbind(addr, length, None)
    offset = [0]  # where the hot range starts; SIGUSR1 moves it by --shift-mib

    def shift(signum: int, frame: object) -> None:
        offset[0] = (offset[0] + (args.shift_mib << 20)) % length

    signal.signal(signal.SIGUSR1, shift)  # before the JSON line: a signal after it must not kill the process
    info = {
        "pid": os.getpid(),
        "addr": addr,
        "length": length,
        "page_size": page,
        "node": args.node,
        "hot_length": args.hot_mib << 20,
    }
    if args.warm_mib:
        info["warm_length"] = args.warm_mib << 20
    print(json.dumps(info), flush=True)

    hot, warm = args.hot_mib << 20, args.warm_mib << 20
    pause = max(args.sleep_ms, 0.0) / 1000.0
    passes = 0
    while True:
        start = offset[0]
        touch_range(view, start, hot, length, page)
        if warm and passes % args.warm_every == 0:
            touch_range(view, (start + hot) % length, warm, length, page)
        passes += 1
        time.sleep(pause if hot else 3600.0)


def touch_range(view: memoryview, start: int, size: int, length: int, page: int) -> None:
    """Touch `size` bytes from `start`, wrapping around the end of the `length`-byte buffer."""
    if start + size <= length:
        touch(view[start:], size, page)
    else:
        touch(view[start:], length - start, page)
        touch(view, start + size - length, page)


if __name__ == "__main__":
    sys.exit(main())
