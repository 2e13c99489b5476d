"""The placement loop: sample heat -> decide a plan -> apply it -> record outcomes. Time is passed in.

`Loop.tick(now)` is the whole cycle; the daemon calls it every policy interval with the real clock, `simulate`
and the tests call it with simulated time. Heat is smoothed per region with an exponential decay of
`hotness.half_life`; regions that moved are remembered for the cooldown and for counting ping-pong (a region
sent back to the node it left less than two cooldowns earlier).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cxltierd.engines.base import Migrator, Tracker
from cxltierd.model import Move, Outcome, Plan, RegionHeat, Sample, Transfer
from cxltierd.policy.decide import Key, PlacementState, decide
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

BATCH_BYTES = 64 << 20
Decide = Callable[[Topology, Sequence[RegionHeat], Policy, PlacementState, float], Plan]


def merge(outcomes: list[Outcome]) -> Outcome:
    """One Outcome for several batches: transfers summed per (src, dst), failures per reason."""
    if len(outcomes) == 1:
        return outcomes[0]
    moved: Counter[tuple[int, int]] = Counter()
    pages: Counter[tuple[int, int]] = Counter()
    failures: Counter[str] = Counter()
    for o in outcomes:
        for t in o.transfers:
            moved[(t.src, t.dst)] += t.bytes
            pages[(t.src, t.dst)] += t.pages
        failures.update(o.failures)
    return Outcome(
        transfers=tuple(Transfer(s, d, b, pages[(s, d)]) for (s, d), b in moved.items()),
        failures=dict(failures),
        seconds=sum(o.seconds for o in outcomes),
        moved=tuple(k for o in outcomes for k in o.moved),
        errors=tuple(e for o in outcomes for e in o.errors),
    )


@dataclass(frozen=True)
class TickReport:
    """What one tick saw and did."""

    now: float
    plan: Plan
    outcome: Outcome
    fast_share: float | None  # share of accesses on the fast nodes (true when the tracker knows it)
    usage: dict[int, tuple[int, int]]  # node -> (total, free) after the tick's sample
    hot_bytes: dict[str, int]  # tier -> bytes of regions at or above the hot threshold
    regions: int
    dry_run: bool = False
    process_bytes: dict[tuple[int, str, str], int] = field(default_factory=dict)  # (pid, comm, tier) -> bytes

    @property
    def moved_bytes(self) -> int:
        return sum(t.bytes for t in self.outcome.transfers)


@dataclass
class Totals:
    """Cumulative counters since the loop started (what metrics and `status` report)."""

    ticks: int = 0
    migrated_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (from_tier, to_tier) -> bytes
    migrated_pages: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # reason -> pages
    ping_pong: int = 0
    planned_moves: int = 0


class Loop:
    """One placement loop over a tracker and a migrator."""

    def __init__(
        self,
        topology: Topology,
        tracker: Tracker,
        migrator: Migrator,
        policy: Policy,
        decide: Decide = decide,
    ) -> None:
        self.topology = topology
        self.tracker = tracker
        self.migrator = migrator
        self.policy = policy
        self.decide = decide
        self.heat: dict[Key, float] = {}
        self.last_seen: float | None = None
        self.moved_at: dict[Key, tuple[float, int, int]] = {}  # key -> (time, src, dst) of its last move
        self.totals = Totals()
        self.last: TickReport | None = None
        self._configure()

    def _configure(self) -> None:
        self.migrator.configure(self.topology, self.policy)
        if self.tracker is not self.migrator:
            self.tracker.configure(self.topology, self.policy)

    def set_policy(self, policy: Policy) -> None:
        """Swap the policy (at a tick boundary: the daemon calls this between ticks)."""
        self.policy = policy
        self._configure()

    def set_topology(self, topology: Topology) -> None:
        """A node or region came or went: later plans use only what the new topology holds."""
        self.topology = topology
        self._configure()

    def tier_name(self, node: int) -> str:
        try:
            return self.topology.tier_of(node).name
        except KeyError:
            return "unknown"

    def smooth(self, sample: Sample, now: float) -> list[RegionHeat]:
        """Exponentially decayed heat per region; regions not in the sample are forgotten."""
        dt = 0.0 if self.last_seen is None else max(0.0, now - self.last_seen)
        hl = self.policy.hotness.half_life
        keep = math.pow(0.5, dt / hl) if hl > 0 else 0.0  # weight of the old heat
        heat: dict[Key, float] = {}
        out = []
        fresh = 1.0 - keep
        get = self.heat.get
        for r in sample.regions:
            key = (r.pid, r.start)
            old = get(key)
            h = r.accesses if old is None else old * keep + r.accesses * fresh
            heat[key] = h
            out.append(RegionHeat(r.pid, r.start, r.size, r.node, h, r.age))
        self.heat = heat
        self.last_seen = now
        return out

    def tick(self, now: float, stop: Callable[[], bool] | None = None) -> TickReport:
        """One cycle at time `now` (seconds). `stop()` true abandons the plan's remaining batches."""
        sample = self.tracker.sample(now)
        first = self.last_seen is None  # no heat history yet: observe only
        smoothed = self.smooth(sample, now)
        horizon = 2 * self.policy.cooldown
        self.moved_at = {k: m for k, m in self.moved_at.items() if now - m[0] < horizon and k in self.heat}
        state = PlacementState(
            free_bytes=sample.free_bytes,
            total_bytes=sample.total_bytes,
            processes=sample.processes,
            last_moved={k: m[0] for k, m in self.moved_at.items()},
            resolution=sample.resolution,
        )
        dry = self.policy.dry_run
        if getattr(self.migrator, "kernel_executed", False):
            # DAMOS / NUMA-balancing tiering: the kernel moves memory; apply() reports what it did.
            plan = Plan(notes=(f"the kernel moves memory ({self.migrator.name} engine)",))
            outcome = self.migrator.apply(plan, now)
        elif first:
            plan, outcome = Plan(notes=("first sample: collecting heat before moving anything",)), Outcome()
        else:
            plan = self.decide(self.topology, smoothed, self.policy, state, now)
            outcome = Outcome() if dry or not plan.moves else self._apply(plan, now, stop)
        self._record(plan, outcome, now)
        report = TickReport(
            now=now,
            plan=plan,
            outcome=outcome,
            fast_share=sample.fast_share if sample.fast_share is not None else self._estimate_share(smoothed),
            usage={n: (sample.total_bytes.get(n, 0), f) for n, f in sample.free_bytes.items()},
            hot_bytes=self._hot_bytes(smoothed),
            regions=len(smoothed),
            dry_run=dry,
            process_bytes=self._process_bytes(smoothed, sample) if self.policy.metrics.process_labels else {},
        )
        self.last = report
        return report

    def _apply(self, plan: Plan, now: float, stop: Callable[[], bool] | None) -> Outcome:
        """Apply the plan in batches of about BATCH_BYTES, so a stop request waits for one batch at most."""
        outcomes: list[Outcome] = []
        batch: list[Move] = []
        size = 0
        for i, m in enumerate(plan.moves):
            batch.append(m)
            size += m.size
            if size >= BATCH_BYTES or i == len(plan.moves) - 1:
                if stop is not None and stop():
                    skipped = len(plan.moves) - i - 1 + len(batch)
                    outcomes.append(Outcome(errors=(f"stopping: abandoned {skipped} planned moves",)))
                    break
                outcomes.append(self.migrator.apply(Plan(moves=tuple(batch)), now))
                batch, size = [], 0
        return merge(outcomes)

    def _record(self, plan: Plan, outcome: Outcome, now: float) -> None:
        t = self.totals
        t.ticks += 1
        t.planned_moves += len(plan.moves)
        for tr in outcome.transfers:
            pair = (self.tier_name(tr.src), self.tier_name(tr.dst))
            t.migrated_bytes[pair] += tr.bytes
            t.migrated_pages[pair] += tr.pages
        for reason, pages in outcome.failures.items():
            t.failures[reason] += pages
        by_key = {m.key: m for m in plan.moves}
        for key in outcome.moved:
            m = by_key.get(key)
            if m is None:
                continue
            prev = self.moved_at.get(key)
            if prev is not None and prev[1] == m.dst and now - prev[0] < 2 * self.policy.cooldown:
                t.ping_pong += 1
            self.moved_at[key] = (now, m.src, m.dst)

    def _estimate_share(self, regions: list[RegionHeat]) -> float | None:
        fast = set(roles(self.topology, self.policy).fast)
        total = sum(r.accesses for r in regions)
        if total <= 0:
            return None
        return sum(r.accesses for r in regions if r.node in fast) / total

    def _process_bytes(self, regions: list[RegionHeat], sample: Sample) -> dict[tuple[int, str, str], int]:
        """Managed memory per process and tier (only when the policy allows pid/comm labels)."""
        out: Counter[tuple[int, str, str]] = Counter()
        tier = {n: t.name for t in self.topology.tiers for n in t.nodes}
        for r in regions:
            p = sample.processes.get(r.pid)
            out[(r.pid, p.name if p else "", tier.get(r.node, "unknown"))] += r.size
        return dict(out)

    def _hot_bytes(self, regions: list[RegionHeat]) -> dict[str, int]:
        out: Counter[str] = Counter({t.name: 0 for t in self.topology.tiers})
        tier = {n: t.name for t in self.topology.tiers for n in t.nodes}
        threshold = self.policy.hotness.hot_threshold
        for r in regions:
            if r.accesses >= threshold:
                out[tier.get(r.node, "unknown")] += r.size
        return dict(out)
