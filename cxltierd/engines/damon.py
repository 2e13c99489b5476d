"""DAMON through its sysfs interface (/sys/kernel/mm/damon/admin): program kdamonds, read their regions back.

What to write is computed by pure functions (`context_writes`) and applied through the injected HostFS, so tests
check the exact list of writes. cxltierd owns the kdamonds it created, and only those: it records them in a
state file, turns them off and removes them on stop, cleans up what a crashed predecessor left (the state file
says so), and refuses to touch kdamonds somebody else set up (DamonBusy, reported as a conflict).

Monitoring results are read as damo does: every context carries a `stat` scheme matching all regions, and
writing `update_schemes_tried_regions` to the kdamond's state fills schemes/0/tried_regions/N/{start,end,
nr_accesses,age}.

What the kernel (6.12 and later) does that the writes must respect:
- `state`, `pid` and every `nr_*` file take DAMON's sysfs mutex with trylock and fail with EBUSY while another
  writer (another kdamond's command, damo, a test reading `state`) holds it: every access here retries on EBUSY.
- `nr_kdamonds` cannot change while any kdamond runs (EBUSY): kdamonds are turned off before they are removed.
- Writing an `nr_*` file re-creates the directories below it with defaults, so a commit to a running kdamond
  writes only the values that changed when the structure (counts) is the same, and never rewrites nr_contexts.
- A new scheme's access pattern matches nothing until all six bounds are written; quota weights default to 0
  (no prioritisation within a quota), so they are written too.
- Filters (6.12): memcg (exact cgroup, not its descendants; several filters of one scheme all apply, so two
  memcg filters with matching=N exclude everything: a scheme covers one cgroup), young (the page's accessed bit, which the filter
  clears; a page never checked counts as young), addr (physical range for paddr). A filter excludes the pages it
  matches (matching=Y) or the pages it does not match (matching=N); filters only ever exclude.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS

ADMIN = "/sys/kernel/mm/damon/admin"
KDAMONDS = f"{ADMIN}/kdamonds"
U32_MAX = 4294967295
SIZE_MAX = (1 << 64) - 1
MIN_REGIONS = 100  # fewer DAMON regions average a hot set with its cold neighbours for many seconds
BUSY_RETRY_S = 3.0  # give up retrying an EBUSY access after this long

T = TypeVar("T")


class DamonBusy(CxltierdError):
    """Kdamonds that cxltierd did not create exist: it will not take them over."""


@dataclass(frozen=True)
class Goal:
    """A DAMOS quota goal: the kernel tunes the scheme's quota so `metric` approaches `target` (6.8+).

    node_mem_used_bp / node_mem_free_bp (6.16) read node `nid`'s memory in basis points themselves; user_input takes
    `current` from cxltierd (written every tick and committed with commit_schemes_quota_goals)."""

    metric: str
    target: int
    current: int = 0
    nid: int | None = None
    path: str | None = None  # node_memcg_used_bp / node_memcg_free_bp (6.19): the cgroup, from the cgroup2 mount


@dataclass(frozen=True)
class Scheme:
    """One DAMOS scheme as cxltierd programs it: action, access pattern bounds, quota, filters and goals."""

    action: str = "stat"  # stat | migrate_hot | migrate_cold | ...
    target_nid: int | None = None
    sz: tuple[int, int] = (0, SIZE_MAX)
    nr_accesses: tuple[int, int] = (0, U32_MAX)  # samples per aggregation interval with an access
    age: tuple[int, int] = (0, U32_MAX)  # aggregation intervals
    quota_bytes: int = 0  # per reset interval; 0 = no quota
    quota_ms: int = 0
    reset_interval_ms: int = 1000
    weights: tuple[int, int, int] = (0, 1000, 0)  # quota priority per mille: size, nr_accesses, age
    memcg: str | None = None  # apply only to memory of this cgroup (a memcg filter, matching=N)
    not_memcgs: tuple[str, ...] = ()  # never to memory of these cgroups (a memcg filter each, matching=Y)
    young: bool | None = None  # True: only pages accessed since last checked; False: only pages that were not
    exclude: tuple[tuple[int, int], ...] = ()  # address ranges [start, end) the scheme must not touch
    anon_both: bool = False  # exclude anon and non-anon pages: the action applies to nothing (after the filters ran)
    goals: tuple[Goal, ...] = ()


@dataclass(frozen=True)
class Target:
    """A monitoring target: a process (vaddr) or physical address ranges (paddr)."""

    pid: int | None = None  # vaddr targets
    regions: tuple[tuple[int, int], ...] = ()  # paddr targets: physical [start, end) ranges


@dataclass(frozen=True)
class Context:
    """One kdamond's context: operations set, targets, schemes and monitoring attributes."""

    operations: str  # vaddr | paddr
    targets: tuple[Target, ...]
    schemes: tuple[Scheme, ...] = (Scheme(),)
    sample_us: int = 5000
    aggr_us: int = 100000
    update_us: int = 1000000
    min_regions: int = 10
    max_regions: int = 1000
    refresh_ms: int = 0  # kdamond refresh_ms (6.17): the kernel refreshes stats this often; 0 = not written


@dataclass(frozen=True)
class DamonRegion:
    """One region DAMON tried a scheme on: its address range, nr_accesses and age (aggregation intervals)."""

    start: int
    end: int
    nr_accesses: int
    age: int  # aggregation intervals


def context_writes(kdamond: int, ctx: Context) -> list[tuple[str, str]]:
    """The sysfs writes (path, value) that program kdamond `kdamond` with one context, in order."""
    k = f"{KDAMONDS}/{kdamond}"
    c = f"{k}/contexts/0"
    w = [(f"{k}/refresh_ms", str(ctx.refresh_ms))] if ctx.refresh_ms else []
    w += [
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
            (f"{sp}/quotas/weights/sz_permil", str(s.weights[0])),
            (f"{sp}/quotas/weights/nr_accesses_permil", str(s.weights[1])),
            (f"{sp}/quotas/weights/age_permil", str(s.weights[2])),
        ]
        if s.goals:  # kernels before 6.8 have no goals directory: written only when a goal is asked for
            w.append((f"{sp}/quotas/goals/nr_goals", str(len(s.goals))))
            for j, g in enumerate(s.goals):
                gp = f"{sp}/quotas/goals/{j}"
                w += [(f"{gp}/target_metric", g.metric), (f"{gp}/target_value", str(g.target))]
                if g.nid is not None:
                    w.append((f"{gp}/nid", str(g.nid)))
                if g.path is not None:
                    w.append((f"{gp}/path", g.path))
                w.append((f"{gp}/current_value", str(g.current)))
        filters: list[list[tuple[str, str]]] = []
        if s.memcg:  # filter OUT memory that is not in this cgroup
            filters.append([("type", "memcg"), ("memcg_path", s.memcg), ("matching", "N")])
        for cg in s.not_memcgs:  # filter OUT memory in this cgroup (several: each excludes its own)
            filters.append([("type", "memcg"), ("memcg_path", cg), ("matching", "Y")])
        if s.young is not None:  # young=True filters OUT pages that are not young (matching=N), False the young ones
            filters.append([("type", "young"), ("matching", "N" if s.young else "Y")])
        for start, end in s.exclude:
            filters.append([("type", "addr"), ("addr_start", str(start)), ("addr_end", str(end)), ("matching", "Y")])
        if s.anon_both:
            filters += [[("type", "anon"), ("matching", "Y")], [("type", "anon"), ("matching", "N")]]
        w.append((f"{sp}/filters/nr_filters", str(len(filters))))
        for j, f in enumerate(filters):
            w += [(f"{sp}/filters/{j}/{name}", value) for name, value in f]
    return w


def _is_structure(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith("nr_")


def commit_writes(old: list[tuple[str, str]] | None, new: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What to write to a running kdamond to go from `old` to `new` (both from context_writes).

    Same structure (every nr_* file the same): only the values that changed. Otherwise everything but
    contexts/nr_contexts (re-creating the context directory under a running kdamond is never needed).
    """
    if old is not None and [w for w in old if _is_structure(w[0])] == [w for w in new if _is_structure(w[0])]:
        before = dict(old)
        return [(p, v) for p, v in new if before.get(p) != v]
    return [(p, v) for p, v in new if not p.endswith("/contexts/nr_contexts")]


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


def busy(e: HostFSError) -> bool:
    """Did DAMON's sysfs mutex (or a kdamond stopping meanwhile) refuse the access?"""
    return e.errno == errno.EBUSY


class Kdamonds:
    """The kdamonds cxltierd owns: created on start(), recorded in `state_file`, removed on stop()."""

    def __init__(
        self,
        fs: HostFS,
        state_file: str | os.PathLike[str],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fs = fs
        self.state_file = Path(state_file)
        self.count = 0
        self.sleep = sleep
        self.clock = clock
        self.written: dict[int, list[tuple[str, str]]] = {}  # kdamond -> its last context_writes()

    # ---- sysfs access, retried while DAMON's mutex is busy ------------------------------------------------------
    def _retry(self, fn: Callable[[], T], give_up: Callable[[], bool] | None = None) -> T:
        deadline = self.clock() + BUSY_RETRY_S
        delay = 0.005
        while True:
            try:
                return fn()
            except HostFSError as e:
                if not busy(e) or self.clock() > deadline or (give_up is not None and give_up()):
                    raise
            self.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _write(self, path: str, value: str) -> None:
        self._retry(lambda: self.fs.write(path, value))

    def _writes(self, writes: list[tuple[str, str]]) -> None:
        for path, value in writes:
            self._write(path, value)

    def _read(self, path: str) -> str:
        return self._retry(lambda: self.fs.read(path))

    def _nr(self) -> int:
        return int(self._read(f"{KDAMONDS}/nr_kdamonds"))

    def available(self) -> bool:
        """Whether this kernel has DAMON's sysfs interface."""
        return self.fs.exists(f"{KDAMONDS}/nr_kdamonds")

    def state(self, i: int) -> str:
        """The state file of kdamond i (on, off), retried while DAMON's mutex is busy."""
        return self._read(f"{KDAMONDS}/{i}/state")

    def foreign(self) -> list[str]:
        """Kdamonds that exist but are not (recorded as) ours, described for a conflict message."""
        nr = self._nr()
        if nr == 0 or self._recorded() == nr:
            return []
        out = []
        for i in range(nr):
            try:
                state = self.state(i)
                pid = self._read(f"{KDAMONDS}/{i}/pid")
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
        """Create one kdamond per context and turn them on. Raises DamonBusy when others' kdamonds exist.

        A kdamond the kernel refuses to turn on (a memcg path that does not exist, a dead pid) is an error; what was
        created is removed again before it is raised.
        """
        self.reserve(len(contexts))
        try:
            for i, ctx in enumerate(contexts):
                self._program(i, ctx)
        except CxltierdError:
            with contextlib.suppress(CxltierdError):
                self.cleanup()
            raise

    def reserve(self, n: int) -> None:
        """Create n kdamonds, all off (a pool to program and turn on one by one). Raises DamonBusy when others'
        kdamonds exist. nr_kdamonds cannot change while any kdamond runs, so the pool size is fixed until cleanup()."""
        if not self.available():
            raise CxltierdError(f"{self.fs.path(KDAMONDS)}: DAMON sysfs interface not present")
        others = self.foreign()
        if others:
            raise DamonBusy(f"DAMON is in use by someone else ({', '.join(others)}); cxltierd will not take it over")
        self.cleanup()  # ours from a crashed run, if any
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"nr_kdamonds": n, "pid": os.getpid()}))
        try:
            self._write(f"{KDAMONDS}/nr_kdamonds", str(n))
        except CxltierdError:
            with contextlib.suppress(CxltierdError):
                self.cleanup()
            raise
        self.count = n

    def _program(self, i: int, ctx: Context, extra: tuple[tuple[str, str], ...] = ()) -> None:
        """Write kdamond i's context (and `extra` writes), remember it for later commits, and turn it on."""
        writes = context_writes(i, ctx)
        self._writes([*writes, *extra])
        self.written[i] = writes
        self._write(f"{KDAMONDS}/{i}/state", "on")

    def restart(self, i: int, ctx: Context, extra: tuple[tuple[str, str], ...] = ()) -> None:
        """Program kdamond i (of the pool) with `ctx` and turn it on; turned off first if it runs. The other
        kdamonds go on undisturbed. `extra`: more (path, value) writes before it is turned on, for files Context does
        not model (a benchmark's peer setting monitoring_attrs/intervals_goal)."""
        self.stop_one(i)
        self._program(i, ctx, extra)

    def stop_one(self, i: int) -> None:
        """Turn kdamond i off (it stays in the pool); one that stopped by itself (its vaddr target exited) is fine."""
        with contextlib.suppress(HostFSError):
            if self.state(i) == "on":
                self._write(f"{KDAMONDS}/{i}/state", "off")

    def commit(self, i: int, ctx: Context) -> None:
        """Apply new parameters to a running kdamond (state `commit`); only what changed is written."""
        writes = context_writes(i, ctx)
        todo = commit_writes(self.written.get(i), writes)
        if not todo:
            return
        self._writes(todo)
        self.written[i] = writes
        goals_only = all(path.endswith("/current_value") for path, _ in todo)
        self._write(f"{KDAMONDS}/{i}/state", "commit_schemes_quota_goals" if goals_only else "commit")

    def update(self, i: int, what: str) -> None:
        """`update_schemes_tried_regions` or `update_schemes_stats`, when the kdamond is on.

        The kernel answers EBUSY both when its mutex is taken and when the kdamond stopped meanwhile (a vaddr
        target exited): retried only while the kdamond is still on.
        """
        if self.state(i) == "on":
            path = f"{KDAMONDS}/{i}/state"
            self._retry(lambda: self.fs.write(path, what), give_up=lambda: self.state(i) != "on")

    def cleanup(self) -> None:
        """Turn off and remove the kdamonds this state file says are ours; forget the record."""
        nr = self._recorded()
        if nr is not None and self._nr() == nr:
            for i in range(nr):
                try:
                    if self.state(i) == "on":
                        self._write(f"{KDAMONDS}/{i}/state", "off")
                except HostFSError:
                    pass  # it stopped by itself meanwhile (vaddr target gone)
            self._write(f"{KDAMONDS}/nr_kdamonds", "0")
        self.count = 0
        self.written = {}
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
