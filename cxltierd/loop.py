"""The placement loop: sample heat -> decide a plan (or gate the kernel) -> apply it -> record outcomes.

The loop is the one owner of live state: the policy, the topology (and the facts it came from) and the engines.
`swap()` replaces any of them at a tick boundary, all or nothing: the engines are configured for the new set first,
and when that fails nothing changes. `tick(now)` is the whole cycle, time passed in: the daemon calls it every
policy interval with the real clock, `simulate` and the tests with simulated time. Heat is smoothed per region with
an exponential decay of `hotness.half_life`; regions that moved are remembered for the cooldown and for counting
ping-pong (a region sent back to the node it left less than two cooldowns earlier). A region whose move failed is
held back from planning for a while (cxltierd.policy.backoff: doubling per consecutive failure, capped).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cxltierd.engines.base import Engines
from cxltierd.facts import HostFacts
from cxltierd.model import Gates, Move, Outcome, Plan, RegionHeat, Sample, Transfer
from cxltierd.policy import backoff
from cxltierd.policy.avoid import gate_off, keep_off
from cxltierd.policy.decide import Key, PlacementState, decide
from cxltierd.policy.gates import kernel_gates
from cxltierd.policy.roles import fast_capacity, roles
from cxltierd.policy.schema import Policy
from cxltierd.policy.tenant_usage import TenantUsage, tenant_usage
from cxltierd.policy.tenants import check_fit
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
    region_bytes: int = 0  # the largest region (tracker chunk) of the tick's sample
    dry_run: bool = False
    process_bytes: dict[tuple[int, str, str], int] = field(default_factory=dict)  # (pid, comm, tier) -> bytes
    gates: Gates | None = None  # what a kernel-executed engine was allowed this tick (None: cxltierd moves)
    available: dict[int, int] = field(default_factory=dict)  # node -> available bytes (Sample.room) this tick
    tenants: dict[str, TenantUsage] = field(default_factory=dict)  # policy.tenants + "other" (empty without)

    @property
    def moved_bytes(self) -> int:
        """Bytes that moved this tick, over all transfers."""
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
    tenant_moves: Counter[str] = field(default_factory=Counter)  # tenant -> regions moved


class Loop:
    """One placement loop: owns the policy, the topology and the engines, and runs the cycle over them."""

    def __init__(
        self,
        topology: Topology,
        engines: Engines,
        policy: Policy,
        facts: HostFacts | None = None,
        decide: Decide = decide,
    ) -> None:
        self.topology = topology
        self.engines = engines
        self.policy = policy
        self.facts = facts
        self.decide = decide
        self.heat: dict[Key, float] = {}
        self.last_seen: float | None = None
        self.moved_at: dict[Key, tuple[float, int, int]] = {}  # key -> (time, src, dst) of its last move
        self.gates = Gates()
        self.totals = Totals()
        self.last: TickReport | None = None
        self.started = False
        self.avoid: frozenset[int] = frozenset()  # nodes nothing may be moved into (RAS: unhealthy)
        self.regions: list[RegionHeat] = []  # the last tick's smoothed regions
        self.strikes: dict[Key, backoff.Strike] = {}  # regions whose last moves failed (held back for a while)
        self.attempted: list[Key] = []  # keys of the moves handed to the migrator this tick
        self.bandwidth: Callable[[float], dict[int, float]] | None = None  # measured bytes/s per node (PMU)

    def start(self) -> None:
        """Configure the engines for the current state (kdamonds started, knobs set). The first tick calls it if
        nobody did; the daemon calls it before anything else, so a host it cannot run on fails at start."""
        if not self.started:
            check_fit(self.policy.tenants, fast_capacity(self.topology, self.policy), self.policy.source)
            self.engines.configure(self.topology, self.policy)
            self.started = True

    def swap(
        self,
        *,
        policy: Policy | None = None,
        topology: Topology | None = None,
        facts: HostFacts | None = None,
        engines: Engines | None = None,
    ) -> None:
        """Replace live state between ticks. The engines (new or current) are configured for the new set first;
        if that raises, nothing changes (new engines are stopped again); so does a new policy whose tenants'
        guarantees exceed the fast tier (ConfigError). Replaced engines are stopped. New facts
        alone (a re-discovery that found the same topology) configure nothing: the engines do not read them."""
        new_policy = policy or self.policy
        new_topology = topology or self.topology
        new_engines = engines or self.engines
        if policy is not None:  # a new topology smaller than the guarantees is the truth: decide() scales them
            check_fit(new_policy.tenants, fast_capacity(new_topology, new_policy), new_policy.source)
        try:
            if self.started and (policy or topology or engines):
                new_engines.configure(new_topology, new_policy)
        except BaseException:
            if engines is not None and engines is not self.engines:
                engines.stop()
            raise
        old = self.engines
        self.policy, self.topology, self.engines = new_policy, new_topology, new_engines
        if facts is not None:
            self.facts = facts
        if new_engines is not old:
            old.stop()

    def stop(self) -> None:
        """Stop the engines (kdamonds removed, knobs restored)."""
        self.engines.stop()
        self.started = False

    def tier_name(self, node: int) -> str:
        """The name of the tier holding the node, or "unknown" when no tier does."""
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
        self.start()
        migrator = self.engines.migrator
        sample = self.engines.tracker.sample(now)
        first = self.last_seen is None  # no heat history yet: observe only
        smoothed = self.smooth(sample, now)
        self.regions = smoothed
        horizon = 2 * self.policy.cooldown
        self.moved_at = {k: m for k, m in self.moved_at.items() if now - m[0] < horizon and k in self.heat}
        state = PlacementState(
            free_bytes=sample.free_bytes,
            total_bytes=sample.total_bytes,
            processes=sample.processes,
            last_moved={k: m[0] for k, m in self.moved_at.items()},
            resolution=sample.resolution,
            available_bytes=sample.available_bytes,
            held_until=backoff.held(self.strikes, now),
            measured_bandwidth=self.bandwidth(now) if self.bandwidth else {},
        )
        dry = self.policy.dry_run
        gates = None
        if migrator.kernel_executed:
            # DAMOS / NUMA-balancing tiering: the kernel moves memory within the gates; apply() reports what it did.
            r = roles(self.topology, self.policy)
            gates = self.gates = kernel_gates(r, self.policy, sample.room, sample.total_bytes, self.gates)
            if self.avoid:
                gates = gate_off(gates, r.slow, r.fast, self.avoid)
            migrator.gate(gates)
            plan = Plan(notes=(f"the kernel moves memory ({migrator.name} engine)",))
            if self.policy.tenants:
                why = (
                    "tenants: weights and goals in the DAMOS schemes (status: kernel_features_used)"
                    if migrator.name == "damos"
                    else "tenants: budgets apply only where cxltierd moves memory (move_pages)"
                )
                plan = Plan(notes=(*plan.notes, why))
            outcome = migrator.apply(plan, now)
        elif first:
            plan, outcome = Plan(notes=("first sample: collecting heat before moving anything",)), Outcome()
        else:
            plan = self.decide(self.topology, smoothed, self.policy, state, now)
            if self.avoid:
                plan = keep_off(plan, self.avoid)
            if state.held_until:
                wait = max(state.held_until.values()) - now
                note = f"backoff: {len(state.held_until)} regions held after failed moves (for up to {wait:.0f}s)"
                plan = Plan(moves=plan.moves, notes=(note, *plan.notes))
            self.attempted = []
            outcome = Outcome() if dry or not plan.moves else self._apply(plan, now, stop)
            done = set(outcome.moved)
            failed = [k for k in self.attempted if k not in done]
            self.strikes = backoff.update(self.strikes, failed, done, self.heat, now, self.policy.interval)
        self._record(plan, outcome, now)
        done = set(outcome.moved)
        tenants = tenant_usage(
            self.topology, self.policy, smoothed, sample.processes, [m for m in plan.moves if m.key in done]
        )
        self.totals.tenant_moves.update({t: u.moves for t, u in tenants.items()})
        report = TickReport(
            now=now,
            plan=plan,
            outcome=outcome,
            fast_share=sample.fast_share if sample.fast_share is not None else self._estimate_share(smoothed),
            usage={n: (sample.total_bytes.get(n, 0), f) for n, f in sample.free_bytes.items()},
            hot_bytes=self._hot_bytes(smoothed),
            regions=len(smoothed),
            region_bytes=max((r.size for r in sample.regions), default=0),
            dry_run=dry,
            process_bytes=self._process_bytes(smoothed, sample) if self.policy.metrics.process_labels else {},
            gates=gates,
            available=sample.room,
            tenants=tenants,
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
                outcomes.append(self.engines.migrator.apply(Plan(moves=tuple(batch)), now))
                self.attempted.extend(m.key for m in batch)
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
