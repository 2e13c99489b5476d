"""The NUMA-balancing engine: the kernel's own tiering mode, configured from the policy and watched.

configure() sets kernel.numa_balancing to memory tiering (bit 2, keeping bit 1 if it was on),
/sys/kernel/mm/numa/demotion_enabled to true, numa_balancing_promote_rate_limit_MBps to the policy's rate limit and,
when debugfs is mounted, sched/numa_balancing/hot_threshold_ms to 1000 / hotness.hot_threshold (a page counts as
hot when its hint fault comes within that many ms of the scan that armed it, i.e. when it is accessed at least
hot_threshold times a second; the policy's default 1/s is the kernel's default 1000 ms) and the scanner's
scan_period_max_ms, scan_period_min_ms, scan_delay_ms and scan_size_mb (debugfs_values(): a range that turns hot
is armed for hint faults within about an interval of the task's CPU time, not a minute or more later), remembering
the previous values; stop() restores them. If tiering mode was already on before cxltierd started, somebody else
owns it: the engine only watches (a conflict, reported), and never writes.

apply() moves nothing itself: it reports what the kernel did since the last call, from the per-node
pgpromote_success (counted on the node pages were promoted to) and pgdemote_* (counted on the node they left).
The kernel does not count where a promoted page came from: the engine charges promotions to the slow nodes whose
user pages (nr_anon_pages + nr_file_pages) dropped since the last call, the biggest drop first and at most the
drop of each, and the rest to the node with the biggest drop (or the slowest node when none dropped). Free memory
is not used for this: it changes by thousands of pages on nodes nothing was promoted from. With one slow tier (the
usual DDR + CXL host) the attribution is exact per tier; the totals always equal pgpromote_success.
Demotions go to the next slower node, as the kernel's default demotion order does.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from cxltierd.discovery.live import node_counters, node_memory
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.model import PAGE_SIZE, Gates, Outcome, Plan, Sample, Transfer
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

NUMA_BALANCING = "/proc/sys/kernel/numa_balancing"
RATE_LIMIT = "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"
DEMOTION = "/sys/kernel/mm/numa/demotion_enabled"
SCHED_NB = "/sys/kernel/debug/sched/numa_balancing"
HOT_THRESHOLD = f"{SCHED_NB}/hot_threshold_ms"
SCAN_DELAY = f"{SCHED_NB}/scan_delay_ms"
SCAN_PERIOD_MIN = f"{SCHED_NB}/scan_period_min_ms"
SCAN_PERIOD_MAX = f"{SCHED_NB}/scan_period_max_ms"
SCAN_SIZE = f"{SCHED_NB}/scan_size_mb"
DEBUGFS_KNOBS = (HOT_THRESHOLD, SCAN_DELAY, SCAN_PERIOD_MIN, SCAN_PERIOD_MAX, SCAN_SIZE)  # debugfs may be absent
MAX_HOT_THRESHOLD_MS = 60000
SCAN_SIZE_MB = 64  # per scanner run; the kernel's floor on the period is then 64 MB at 2560 MB/s = 25 ms
SCAN_FLOOR_MS = 25
RUNS_PER_PASS = 32  # scanner runs a full pass over a task's VMAs may take, one idle VMA per run
TIERING = 2
log = logging.getLogger("cxltierd")
DEMOTE_COUNTERS = ("pgdemote_kswapd", "pgdemote_direct", "pgdemote_khugepaged", "pgdemote_proactive")


def hot_threshold_ms(accesses_per_s: float) -> int:
    """The kernel's hot_threshold_ms for a policy hot_threshold (accesses/s): 1000 / rate, within 1..60000."""
    if accesses_per_s <= 0:
        return MAX_HOT_THRESHOLD_MS
    return max(1, min(MAX_HOT_THRESHOLD_MS, round(1000 / accesses_per_s)))


def debugfs_values(interval_s: float, accesses_per_s: float) -> dict[str, int]:
    """The debugfs sched/numa_balancing knobs for a policy's interval and hot_threshold (ms, scan_size in MB).

    The kernel arms a task's slow-tier pages for hint faults in scanner runs, one every scan period of the task's
    CPU time. In tiering mode pages on the fast tier are never armed, so the VMAs holding them never fault and
    count as idle; a run scans only one idle VMA, and a VMA already scanned in this pass (the one whose hot range
    just moved) waits for the pass to end. So a pass takes as many runs as the task has VMAs, and a range that
    turns hot is armed only a pass later: minutes later with the kernel's default period (up to 60 s), and about
    30 s for a Python process (24 idle VMAs) at periods up to 2 s. The engine wants a pass within one interval (or
    the hot threshold, if shorter): scan_period_max_ms = that / RUNS_PER_PASS, at least SCAN_FLOOR_MS, reached with
    scan_size_mb SCAN_SIZE_MB (the kernel keeps every task at most 2560 MB/s of scanning, and its own NUMA-work
    limit of about 3% CPU stays); scan_period_min_ms = SCAN_FLOOR_MS; scan_delay_ms (a new task's first scan) =
    the pass time. hot_threshold_ms as hot_threshold_ms() says.
    """
    hot_ms = hot_threshold_ms(accesses_per_s)
    pass_ms = max(SCAN_FLOOR_MS, min(round(interval_s * 1000), hot_ms))
    return {
        HOT_THRESHOLD: hot_ms,
        SCAN_DELAY: pass_ms,
        SCAN_PERIOD_MIN: SCAN_FLOOR_MS,
        SCAN_PERIOD_MAX: max(SCAN_FLOOR_MS, pass_ms // RUNS_PER_PASS),
        SCAN_SIZE: SCAN_SIZE_MB,
    }


class NumaBalancingEngine:
    """Tracker and kernel-executed migrator for NUMA-balancing tiering: sets its knobs, reports its counters."""

    name = "numa_balancing"
    kernel_executed = True

    def __init__(self, fs: HostFS, state_file: str | os.PathLike[str] | None = None) -> None:
        self.fs = fs
        self.state_file = Path(state_file) if state_file else None
        self.saved: dict[str, str] = self._recorded()  # values saved by a crashed predecessor are ours too
        self.watch_only = False
        self.conflict: str | None = None
        self.topology: Topology | None = None
        self.fast: tuple[int, ...] = ()
        self.slow: tuple[int, ...] = ()
        self.last: dict[int, dict[str, int]] = {}
        self.applied: dict[str, int] = {}  # debugfs knobs written, with their values

    def _recorded(self) -> dict[str, str]:
        if self.state_file is None:
            return {}
        try:
            doc = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}

    def _record(self) -> None:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self.saved))

    def check(self) -> str | None:
        """A conflict message when tiering mode is already on (someone else's), else None."""
        try:
            value = self.fs.read_int(NUMA_BALANCING)
        except HostFSError as e:
            raise CxltierdError(f"numa_balancing engine: {e}") from None
        if value & TIERING and not self.saved:
            return f"kernel.numa_balancing is already {value} (memory tiering) and cxltierd did not set it"
        return None

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Save and set the tiering knobs (only watch on a conflict or a dry run); take the fast and slow nodes."""
        if policy.dry_run and not self.saved:
            self.watch_only = True  # dry run: watch the kernel, write nothing
        if not self.saved and not self.watch_only:
            self.conflict = self.check()
            if self.conflict:
                self.watch_only = True
            else:
                for path in (NUMA_BALANCING, DEMOTION, RATE_LIMIT, *DEBUGFS_KNOBS):
                    try:
                        value = self.fs.read_optional(path)
                    except HostFSError:
                        if path in DEBUGFS_KNOBS:
                            continue  # debugfs not readable here: the kernel's own value stays
                        raise
                    if value is not None:
                        self.saved[path] = value
                self._record()
        if not self.watch_only:
            old = int(self.saved.get(NUMA_BALANCING, "0"))
            self.fs.write(NUMA_BALANCING, str((old & 1) | TIERING))
            if DEMOTION in self.saved:
                self.fs.write(DEMOTION, "true")
            if RATE_LIMIT in self.saved:
                self.fs.write(RATE_LIMIT, str(max(1, int(policy.rate_limit.mb_per_s))))
            self.set_debugfs(debugfs_values(policy.interval, policy.hotness.hot_threshold))
        self.topology = topology
        r = roles(topology, policy)
        self.fast, self.slow = r.fast, r.slow
        if not self.last:
            self.last = {n: node_counters(self.fs, n) for n in topology.node_ids}

    def set_debugfs(self, values: dict[str, int]) -> None:
        """Write the debugfs knobs whose old value is saved; one that cannot be written keeps the kernel's value."""
        self.applied = {}
        for path, value in values.items():
            if path not in self.saved:
                continue
            try:
                self.fs.write(path, str(value))
                self.applied[path] = value
            except HostFSError as e:  # debugfs readable but not writable here: the kernel's value stays
                log.warning("numa_balancing engine: %s; %s not applied", e, path.rsplit("/", 1)[-1])
                del self.saved[path]
                self._record()

    def live_uses(self) -> tuple[str, ...]:
        """The debugfs values this engine set, for status: hot_threshold_ms=4000, scan_period_ms=25..31, ..."""
        a = self.applied
        out = [f"hot_threshold_ms={a[HOT_THRESHOLD]}"] if HOT_THRESHOLD in a else []
        if SCAN_PERIOD_MIN in a and SCAN_PERIOD_MAX in a:
            out.append(f"scan_period_ms={a[SCAN_PERIOD_MIN]}..{a[SCAN_PERIOD_MAX]}")
        if SCAN_DELAY in a:
            out.append(f"scan_delay_ms={a[SCAN_DELAY]}")
        if SCAN_SIZE in a:
            out.append(f"scan_size_mb={a[SCAN_SIZE]}")
        return tuple(out)

    def gate(self, gates: Gates) -> None:
        """The kernel applies its own watermarks to NUMA-balancing promotion and to demotion: nothing to switch."""

    def sample(self, now: float) -> Sample:
        """Node memory only: the kernel tracks heat itself."""
        nodes = list(self.topology.node_ids) if self.topology else []
        mem = node_memory(self.fs, nodes)
        return Sample(regions=(), free_bytes=mem.free, available_bytes=mem.available, total_bytes=mem.total)

    def sources(self, pages: int, drops: dict[int, int]) -> dict[int, int]:
        """Promoted pages per slow node they are charged to; `drops` (pages each slow node lost) is used up."""
        out: dict[int, int] = {}
        order = sorted((n for n in drops if drops[n] > 0), key=lambda n: -drops[n])
        left = pages
        for n in order:
            take = min(left, drops[n])
            if take:
                out[n] = take
                drops[n] -= take
                left -= take
        if left:
            n = order[0] if order else self.slow[-1]
            out[n] = out.get(n, 0) + left
        return out

    def apply(self, plan: Plan, now: float) -> Outcome:
        """What the kernel promoted and demoted since the last call (the plan is the kernel's business)."""
        moved: Counter[tuple[int, int]] = Counter()
        nodes = list(self.topology.node_ids) if self.topology else []
        now_counters = {n: node_counters(self.fs, n) for n in nodes}

        def user_pages(c: dict[str, int]) -> int:
            return c.get("nr_anon_pages", 0) + c.get("nr_file_pages", 0)

        drops = {
            s: max(0, user_pages(self.last[s]) - user_pages(now_counters[s]))
            for s in self.slow
            if s in now_counters and s in self.last
        }
        for n in nodes:
            cur = now_counters[n]
            prev = self.last.get(n, {})
            promoted = max(0, cur.get("pgpromote_success", 0) - prev.get("pgpromote_success", 0))
            demoted = sum(max(0, cur.get(k, 0) - prev.get(k, 0)) for k in DEMOTE_COUNTERS)
            if promoted and self.slow:
                for src, pages in self.sources(promoted, drops).items():
                    moved[(src, n)] += pages
            if demoted and self.slow:
                dst = next((s for s in self.slow if s != n), self.slow[0])
                moved[(n, dst)] += demoted
            self.last[n] = cur
        return Outcome(transfers=tuple(Transfer(s, d, p * PAGE_SIZE, p) for (s, d), p in sorted(moved.items())))

    def stop(self) -> None:
        """Restore the saved knobs and forget them; CxltierdError names every knob that could not be restored."""
        errors = []
        for path, value in self.saved.items():
            try:
                self.fs.write(path, value)
            except HostFSError as e:
                errors.append(str(e))
        self.saved = {}
        self.applied = {}
        if self.state_file is not None and not errors:
            self.state_file.unlink(missing_ok=True)
        if errors:
            raise CxltierdError("restoring kernel knobs: " + "; ".join(errors))
