"""DAMON through its sysfs interface (/sys/kernel/mm/damon/admin): program kdamonds, read their regions back.

What to write is computed by pure functions (`context_writes`) and applied through the injected HostFS, so tests
check the exact list of writes. cxltierd owns the kdamonds it created, and only those: it records them in a
state file, turns them off and removes them on stop, cleans up what a crashed predecessor left (the state file
says so), and refuses to touch kdamonds somebody else set up (DamonBusy, reported as a conflict).

Monitoring results are read as damo does: every context carries a `stat` scheme matching all regions, and
writing `update_schemes_tried_regions` to the kdamond's state fills schemes/0/tried_regions/N/{start,end,
nr_accesses,age}.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS

ADMIN = "/sys/kernel/mm/damon/admin"
KDAMONDS = f"{ADMIN}/kdamonds"
U32_MAX = 4294967295
SIZE_MAX = (1 << 64) - 1


class DamonBusy(CxltierdError):
    """Kdamonds that cxltierd did not create exist: it will not take them over."""


@dataclass(frozen=True)
class Scheme:
    action: str = "stat"  # stat | migrate_hot | migrate_cold | ...
    target_nid: int | None = None
    sz: tuple[int, int] = (0, SIZE_MAX)
    nr_accesses: tuple[int, int] = (0, U32_MAX)  # samples per aggregation interval with an access
    age: tuple[int, int] = (0, U32_MAX)  # aggregation intervals
    quota_bytes: int = 0  # per reset interval; 0 = no quota
    quota_ms: int = 0
    reset_interval_ms: int = 1000
    memcg: str | None = None  # apply only to memory of this cgroup (a memcg filter, matching=N)


@dataclass(frozen=True)
class Target:
    pid: int | None = None  # vaddr targets
    regions: tuple[tuple[int, int], ...] = ()  # paddr targets: physical [start, end) ranges


@dataclass(frozen=True)
class Context:
    operations: str  # vaddr | paddr
    targets: tuple[Target, ...]
    schemes: tuple[Scheme, ...] = (Scheme(),)
    sample_us: int = 5000
    aggr_us: int = 100000
    update_us: int = 1000000
    min_regions: int = 10
    max_regions: int = 1000


@dataclass(frozen=True)
class DamonRegion:
    start: int
    end: int
    nr_accesses: int
    age: int  # aggregation intervals


def context_writes(kdamond: int, ctx: Context) -> list[tuple[str, str]]:
    """The sysfs writes (path, value) that program kdamond `kdamond` with one context, in order."""
    k = f"{KDAMONDS}/{kdamond}"
    c = f"{k}/contexts/0"
    w = [
        (f"{k}/contexts/nr_contexts", "1"),
        (f"{c}/operations", ctx.operations),
        (f"{c}/monitoring_attrs/intervals/sample_us", str(ctx.sample_us)),
        (f"{c}/monitoring_attrs/intervals/aggr_us", str(ctx.aggr_us)),
        (f"{c}/monitoring_attrs/intervals/update_us", str(ctx.update_us)),
        (f"{c}/monitoring_attrs/nr_regions/min", str(ctx.min_regions)),
        (f"{c}/monitoring_attrs/nr_regions/max", str(ctx.max_regions)),
        (f"{c}/targets/nr_targets", str(len(ctx.targets))),
    ]
    for i, t in enumerate(ctx.targets):
        tp = f"{c}/targets/{i}"
        if t.pid is not None:
            w.append((f"{tp}/pid_target", str(t.pid)))
        w.append((f"{tp}/regions/nr_regions", str(len(t.regions))))
        for j, (start, end) in enumerate(t.regions):
            w += [(f"{tp}/regions/{j}/start", str(start)), (f"{tp}/regions/{j}/end", str(end))]
    w.append((f"{c}/schemes/nr_schemes", str(len(ctx.schemes))))
    for i, s in enumerate(ctx.schemes):
        sp = f"{c}/schemes/{i}"
        w.append((f"{sp}/action", s.action))
        if s.target_nid is not None:
            w.append((f"{sp}/target_nid", str(s.target_nid)))
        # A new scheme matches nothing until every bound is written (6.12): write all six.
        for name, (lo, hi) in (("sz", s.sz), ("nr_accesses", s.nr_accesses), ("age", s.age)):
            w += [(f"{sp}/access_pattern/{name}/min", str(lo)), (f"{sp}/access_pattern/{name}/max", str(hi))]
        w += [
            (f"{sp}/quotas/ms", str(s.quota_ms)),
            (f"{sp}/quotas/bytes", str(s.quota_bytes)),
            (f"{sp}/quotas/reset_interval_ms", str(s.reset_interval_ms)),
            (f"{sp}/filters/nr_filters", "1" if s.memcg else "0"),
        ]
        if s.memcg:
            w += [
                (f"{sp}/filters/0/type", "memcg"),
                (f"{sp}/filters/0/memcg_path", s.memcg),
                (f"{sp}/filters/0/matching", "N"),  # filter OUT memory that is not in this cgroup
            ]
    return w


def parse_regions(fs: HostFS, kdamond: int, scheme: int = 0) -> list[DamonRegion]:
    """schemes/N/tried_regions of a kdamond (after update_schemes_tried_regions), sorted by start."""
    base = f"{KDAMONDS}/{kdamond}/contexts/0/schemes/{scheme}/tried_regions"
    out = []
    for name in fs.listdir(base):
        if not name.isdigit():
            continue
        d = f"{base}/{name}"
        try:
            out.append(
                DamonRegion(
                    start=fs.read_int(f"{d}/start"),
                    end=fs.read_int(f"{d}/end"),
                    nr_accesses=fs.read_int(f"{d}/nr_accesses"),
                    age=fs.read_int(f"{d}/age"),
                )
            )
        except HostFSError:
            continue  # the kdamond rewrote its regions while we read: skip that one
    return sorted(out, key=lambda r: r.start)


def scheme_stats(fs: HostFS, kdamond: int, scheme: int) -> dict[str, int]:
    """nr_tried, sz_tried, nr_applied, sz_applied, qt_exceeds (after update_schemes_stats)."""
    base = f"{KDAMONDS}/{kdamond}/contexts/0/schemes/{scheme}/stats"
    out = {}
    for name in ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds"):
        with contextlib.suppress(HostFSError):
            out[name] = fs.read_int(f"{base}/{name}")
    return out


class Kdamonds:
    """The kdamonds cxltierd owns: created on start(), recorded in `state_file`, removed on stop()."""

    def __init__(self, fs: HostFS, state_file: str | os.PathLike[str]) -> None:
        self.fs = fs
        self.state_file = Path(state_file)
        self.count = 0

    def available(self) -> bool:
        return self.fs.exists(f"{KDAMONDS}/nr_kdamonds")

    def state(self, i: int) -> str:
        return self.fs.read(f"{KDAMONDS}/{i}/state")

    def foreign(self) -> list[str]:
        """Kdamonds that exist but are not (recorded as) ours, described for a conflict message."""
        nr = self.fs.read_int(f"{KDAMONDS}/nr_kdamonds")
        if nr == 0 or self._recorded() == nr:
            return []
        out = []
        for i in range(nr):
            try:
                state = self.state(i)
                pid = self.fs.read(f"{KDAMONDS}/{i}/pid")
            except HostFSError:
                state, pid = "?", "?"
            out.append(f"kdamond {i} ({state}, pid {pid})")
        return out

    def _recorded(self) -> int | None:
        try:
            doc = json.loads(self.state_file.read_text())
            return int(doc["nr_kdamonds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self, contexts: list[Context]) -> None:
        """Create one kdamond per context and turn them on. Raises DamonBusy when others' kdamonds exist."""
        if not self.available():
            raise CxltierdError(f"{self.fs.path(KDAMONDS)}: DAMON sysfs interface not present")
        others = self.foreign()
        if others:
            raise DamonBusy(f"DAMON is in use by someone else ({', '.join(others)}); cxltierd will not take it over")
        self.cleanup()  # ours from a crashed run, if any
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"nr_kdamonds": len(contexts), "pid": os.getpid()}))
        self.fs.write(f"{KDAMONDS}/nr_kdamonds", str(len(contexts)))
        self.count = len(contexts)
        for i, ctx in enumerate(contexts):
            for path, value in context_writes(i, ctx):
                self.fs.write(path, value)
            self.fs.write(f"{KDAMONDS}/{i}/state", "on")

    def commit(self, i: int, ctx: Context) -> None:
        """Apply new parameters to a running kdamond (state `commit`)."""
        for path, value in context_writes(i, ctx):
            self.fs.write(path, value)
        self.fs.write(f"{KDAMONDS}/{i}/state", "commit")

    def restart(self, i: int, ctx: Context) -> None:
        """Turn kdamond i off (if on), reprogram it and turn it on (a vaddr kdamond stops when its target exits)."""
        if self.state(i) == "on":
            self.fs.write(f"{KDAMONDS}/{i}/state", "off")
        for path, value in context_writes(i, ctx):
            self.fs.write(path, value)
        self.fs.write(f"{KDAMONDS}/{i}/state", "on")

    def update(self, i: int, what: str) -> None:
        """`update_schemes_tried_regions` or `update_schemes_stats`, when the kdamond is on."""
        if self.state(i) == "on":
            self.fs.write(f"{KDAMONDS}/{i}/state", what)

    def cleanup(self) -> None:
        """Turn off and remove the kdamonds this state file says are ours; forget the record."""
        nr = self._recorded()
        if nr is not None and self.fs.read_int(f"{KDAMONDS}/nr_kdamonds") == nr:
            for i in range(nr):
                try:
                    if self.state(i) == "on":
                        self.fs.write(f"{KDAMONDS}/{i}/state", "off")
                except HostFSError:
                    pass
            self.fs.write(f"{KDAMONDS}/nr_kdamonds", "0")
        self.count = 0
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
