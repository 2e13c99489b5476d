"""The DAMOS engine: the kernel migrates, cxltierd programs and watches it (kernels >= 6.11).

Two paddr kdamonds (DAMOS migrate actions work on paddr only on 6.12; vaddr migrate_hot applies nothing):
- kdamond 0 monitors the slow nodes' physical ranges; scheme 1 + i is `migrate_hot` of slow node i to the fast
  node, with addr filters excluding the other slow nodes' ranges, so each scheme's sz_applied tells what left
  which node (tiers are told apart in the metrics);
- kdamond 1 monitors the fast nodes' ranges; its scheme 1 is `migrate_cold` to the fastest slow node.
Scheme 0 of each is `stat` over every region, read back as heat. Quotas come from the policy's rate limit (half
for each direction, per second, split between the hot schemes).

Hot means the policy's promotion floor, the same as decide()'s: at least hot_threshold accesses/s and at least
min_samples sampled accesses per aggregation interval. DAMON regions are coarse, and a region that qualifies may mix
hot and cold pages. Two guards keep most cold pages where they
are: a region larger than DAMON's own merge limit (monitored size / min_regions) is not trusted yet (the first
seconds, before DAMON has split its initial regions), and a `young` filter moves only the pages accessed since they
were last checked. The young filter alone is not enough: a page nobody has checked yet counts as young (its idle
flag was never set), and right after allocation that is every page. So the last scheme of the hot kdamond, `prime`,
checks every page of every region with any access (its young filter clears the accessed bit and sets the idle
flag), and excludes all of them with an anon + non-anon filter pair, so its action applies to nothing. A hot scheme
wants age >= 1: the region had about the same access count one aggregation earlier, so `prime` has already been
through its pages, and only the pages touched since then count as young. Cold means no access for a cooldown,
and young pages are never demoted. DAMON needs at least MIN_REGIONS regions to tell hot from cold.

The tier marks gate the schemes per node, which DAMOS watermarks (system-wide free memory) cannot do: promotion
runs while the fast node is below max_used_percent; demotion runs only while it has less than 100 -
max_used_percent free. A scheme is switched by committing it as `stat`. `processes.manage` cgroup selectors
restrict the schemes to those cgroups and their descendants, tenants split the promotion quota and add goal-tuned
schemes, all as damos_groups.py says (memcg filters: one cgroup exactly, or every other memcg excluded). Applying a
non-stat scheme resets a region's age, so of the migrate schemes over a region only the first asks for age >= 1.
The cgroups are enumerated again every RESCAN_S seconds, and the schemes re-committed when that changes them.
Outcomes are the schemes' sz_applied deltas (bytes the kernel migrated: it counts only successful migrations),
read after an update_schemes_stats command every tick. Where the kernel has refresh_ms it is set too, so the stats
files stay fresh for other readers (damo, an operator), but they are not exact: the kernel skips a refresh while
DAMON's sysfs lock is taken (cxltierd takes it every tick for the tried regions), so they can lag the migrations.
"""

from __future__ import annotations

import math
from typing import Any

from cxltierd.discovery.cgroups import CGROUP_ROOT, MAX_CGROUPS, cgroups_under
from cxltierd.discovery.live import node_memory, node_ranges
from cxltierd.engines.damon import (
    MIN_REGIONS,
    U32_MAX,
    Context,
    Goal,
    Kdamonds,
    Scheme,
    Target,
    parse_regions,
    scheme_stats,
)
from cxltierd.engines.damon_probe import DamonFeatures
from cxltierd.engines.damos_groups import GOAL_FREE, GOAL_USED, Coverage, Group, coverage
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.model import PAGE_SIZE, Gates, Outcome, Plan, RegionHeat, Sample, Transfer
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

HOT, COLD = 0, 1  # kdamond indexes
REFRESH_MS = 1000  # where the kernel has refresh_ms: it refreshes the stats files this often, for other readers
MAX_REGIONS = 1000
RESCAN_S = 5.0  # the covered cgroups are enumerated again this often


def hot_min(policy: Policy) -> int:
    """nr_accesses (samples per aggregation interval that saw an access) from which a region is hot."""
    d = policy.damon
    samples = max(1, round(d.aggregation_interval / d.sample_interval))
    floor = max(policy.hotness.hot_threshold * d.aggregation_interval, policy.hotness.min_samples)
    return min(samples, max(1, math.ceil(floor - 1e-9)))


def goal_metric(features: DamonFeatures) -> str | None:
    """The quota-goal metric to use: the kernel's own node metrics where it has them ("node_mem", 6.16), else
    user_input fed by cxltierd (6.9+), else None (the quotas stay fixed)."""
    m = features.goal_metrics
    if "node_mem_used_bp" in m and "node_mem_free_bp" in m:
        return "node_mem"
    return "user_input" if "user_input" in m else None


def uses(features: DamonFeatures, policy: Policy) -> tuple[str, ...]:
    """The kernel features the DAMOS engine drives with these features and this policy (for `status`)."""
    out = ["damon:paddr", "migrate_hot", "migrate_cold", "filter:young", "filter:addr", "filter:anon"]
    if any(s.cgroup for s in policy.processes.manage) or any(t.match.cgroup for t in policy.tenants):
        out.append("filter:memcg")
    if policy.tenants:
        out.append("tenants:" + (GOAL_USED if GOAL_USED in features.goal_metrics else "weighted_quota"))
    metric = goal_metric(features)
    if metric == "node_mem":
        out.append("goal:node_mem_free_bp")
    elif metric == "user_input":
        out.append("goal:user_input")
    return tuple(out)


class DamosEngine:
    """Kernel-executed engine: two paddr kdamonds whose DAMOS schemes migrate hot and cold memory (module docstring)."""

    name = "damos"
    kernel_executed = True

    def __init__(self, fs: HostFS, kdamonds: Kdamonds, features: DamonFeatures | None = None) -> None:
        self.fs = fs
        self.kdamonds = kdamonds
        self.features = features or DamonFeatures()
        self.usage_bp: tuple[int, int] = (0, 10000)  # fastest node's (used, free) in basis points, for user_input goals
        self.policy: Policy | None = None
        self.fast: tuple[int, ...] = ()
        self.slow: tuple[int, ...] = ()
        self.sources: tuple[int, ...] = ()  # slow nodes with memory: one migrate_hot scheme each
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        self.kind: dict[int, str] = {}
        self.gates = Gates()  # promotion on, demotion off until the loop says otherwise
        self.started = False
        self.applied: dict[tuple[int, int], int] = {}  # (kdamond, scheme) -> sz_applied seen last
        self.pending: list[Transfer] = []  # moved before a re-programming, not reported yet
        self.coverage = Coverage(groups=(Group(),))  # the cgroups the migrate schemes cover
        self.layout: list[tuple[int, int, int, int]] = []  # (kdamond, scheme, src, dst) of every migrate scheme
        self.scanned: float | None = None  # when the cgroups were last enumerated (None: at the next sample)
        self.notes: list[str] = []  # log lines for the next apply()

    # ---- programming -----------------------------------------------------------------------------------------
    def scan(self, policy: Policy) -> Coverage:
        """The cgroups to cover now: every processes.manage cgroup selector and the cgroups below it (without one:
        all memory, the tenants' cgroups apart), with the tenants' shares and goals (damos_groups.py)."""
        selectors = [s.cgroup for s in policy.processes.manage if s.cgroup]
        manage_all = not selectors
        if manage_all:
            selectors = [t.match.cgroup for t in policy.tenants if t.match.cgroup]
        found = [c for sel in selectors for c in self._memcgs(sel)]
        every: list[str] | None = None
        if len(set(found)) > 1:  # several cgroups are covered by excluding every other memcg of the host
            listed = cgroups_under(self.fs, "/")
            # at the bound there may be more than listed: they could not all be excluded
            every = None if len(listed) >= MAX_CGROUPS else [c for c in listed if self._is_memcg(c)]
        fast = self.fast[0] if self.fast else None
        total = node_memory(self.fs, list(self.fast)).total if self.fast else {}
        cov = coverage(
            found,
            manage_all,
            policy.tenants,
            self.features.goal_metrics,
            total.get(fast, 0) if fast is not None else 0,
            sum(total.values()),
            every,
        )
        note = cov.note()
        if note and cov.dropped != self.coverage.dropped:
            self.notes.append(note)
        return cov

    def _memcgs(self, prefix: str) -> list[str]:
        """`prefix` and the cgroups below it that have the memory controller (only those are memcgs: a memcg filter
        naming another makes the kernel refuse the commit)."""
        return [c for c in cgroups_under(self.fs, prefix) if self._is_memcg(c)]

    def _is_memcg(self, cgroup: str) -> bool:
        return cgroup == "/" or self.fs.exists(f"{CGROUP_ROOT}{cgroup}/memory.current")

    def live_uses(self) -> tuple[str, ...]:
        """Words added to `status` kernel_features_used as things are now: "memcg_schemes:covered/found"."""
        return self.coverage.status()

    def goal_metric(self) -> str | None:
        """The quota-goal metric family the schemes use, from the probed features."""
        return goal_metric(self.features)

    def goals(self) -> tuple[Goal, ...]:
        """The demotion scheme's quota goal: the kernel tunes its rate so the fastest node keeps
        100 - max_used_percent free. Promotion has none: a goal-tuned quota starts at one byte per reset interval
        and at best doubles each interval (damon_feed_loop_next_input), about 25 s to reach the rate limit, which
        would slow every reaction to a new hot set; promotion runs at the policy's rate while its gate is open."""
        assert self.policy is not None
        metric = self.goal_metric()
        if metric is None:
            return ()
        node = self.fast[0]
        free_bp = 10000 - int(self.policy.watermark(self.kind.get(node, "unknown")).max_used_percent * 100)
        if metric == "node_mem":
            return (Goal("node_mem_free_bp", free_bp, nid=node),)
        return (Goal("user_input", max(1, free_bp), current=self.usage_bp[1]),)

    def contexts(self) -> list[Context]:
        """The hot kdamond's and the cold kdamond's contexts for the current policy, ranges, coverage and gates
        (and self.layout: which scheme moves memory from where to where)."""
        p = self.policy
        assert p is not None
        d = p.damon
        aggr_s = d.aggregation_interval
        min_regions = max(d.min_regions, MIN_REGIONS)
        watched = sum(hi - lo for n in self.sources for lo, hi in self.ranges[n])
        trusted = max(1 << 20, watched // min_regions)  # DAMON's merge limit: bigger regions are still initial ones
        quota = int(p.rate_limit.mb_per_s * (1 << 20) / 2)
        promote = self.gates.promote and not p.dry_run
        fast, per_source = self.fast[0], quota // len(self.sources)
        cov = self.coverage
        layout: list[tuple[int, int, int, int]] = []  # (kdamond, scheme, src, dst); scheme 0 is `stat`

        def filters(g: Group | None) -> dict[str, Any]:
            return {"memcg": g.memcg, "not_memcgs": g.exclude} if g is not None else {}

        def hot_scheme(n: int, g: Group, on: bool, q: int, first: bool, goals: tuple[Goal, ...] = ()) -> Scheme:
            return Scheme(
                action="migrate_hot" if on else "stat",
                target_nid=fast,
                sz=(PAGE_SIZE, trusted),
                nr_accesses=(hot_min(p), U32_MAX),
                # Only the first scheme over a region can ask for age >= 1: applying it resets the age.
                age=(1 if first else 0, U32_MAX),
                quota_bytes=max(PAGE_SIZE, q),
                reset_interval_ms=1000,
                weights=(0, 1000, 500),
                young=True,
                exclude=tuple(r for m in self.sources if m != n for r in self.ranges[m]),
                goals=goals,
                **filters(g),
            )

        hot: list[Scheme] = []
        for k, g in enumerate(cov.groups):
            for n in self.sources:
                hot.append(hot_scheme(n, g, promote, int(per_source * g.share), first=k == 0))
                layout.append((HOT, len(hot), n, fast))
        # A tenant's guarantee: the kernel tunes these schemes' quotas until the tenant holds used_bp of the fast
        # node (about nothing once it does). They run whatever the promotion gate says.
        for tg in cov.goals:
            if tg.used_bp <= 0:
                continue
            goal = Goal(GOAL_USED, tg.used_bp, nid=fast, path=tg.path)
            for n in self.sources:
                hot.append(hot_scheme(n, tg.group, not p.dry_run, per_source, first=False, goals=(goal,)))
                layout.append((HOT, len(hot), n, fast))

        demote = self.gates.demote and not p.dry_run
        cold_age = (max(1, int(p.cooldown / aggr_s)), U32_MAX)
        cold: list[Scheme] = []
        # A tenant's cap: demotes the tenant's cold memory, its quota tuned by the kernel until the tenant is under
        # the cap (about nothing while it is, so the general scheme after it still sees the regions' age).
        for tg in cov.goals if cov.union is not None else ():
            if tg.free_bp is None:
                continue
            cold.append(
                Scheme(
                    action="stat" if p.dry_run else "migrate_cold",
                    target_nid=self.slow[0],
                    nr_accesses=(0, 0),
                    age=cold_age,
                    quota_bytes=max(PAGE_SIZE, quota),
                    reset_interval_ms=1000,
                    weights=(0, 1000, 500),
                    young=False,
                    goals=(Goal(GOAL_FREE, tg.free_bp, nid=fast, path=tg.path),),
                    **filters(tg.group),
                )
            )
            layout.append((COLD, len(cold), fast, self.slow[0]))
        if cov.union is not None:
            cold.append(
                Scheme(
                    action="migrate_cold" if demote else "stat",
                    target_nid=self.slow[0],
                    nr_accesses=(0, 0),
                    age=cold_age,
                    quota_bytes=quota,
                    reset_interval_ms=1000,
                    weights=(0, 1000, 500),
                    young=False,
                    goals=self.goals(),
                    **filters(cov.union),
                )
            )
            layout.append((COLD, len(cold), fast, self.slow[0]))

        prime = Scheme(
            action="lru_deprio",  # never applied: every page is filtered out after the young check
            nr_accesses=(1, U32_MAX),
            young=False,  # young pages are excluded (and aged); the two anon filters exclude the rest
            anon_both=True,
            **filters(cov.union),
        )
        self.layout = layout

        def ctx(nodes: tuple[int, ...], schemes: tuple[Scheme, ...]) -> Context:
            # By address, not by tier order: 7.3 refuses a target whose regions are out of order (EINVAL on `on`).
            regions = tuple(sorted(r for n in nodes for r in self.ranges.get(n, [])))
            return Context(
                operations="paddr",
                targets=(Target(regions=regions),),
                schemes=(Scheme(), *schemes),
                sample_us=int(d.sample_interval * 1e6),
                aggr_us=int(aggr_s * 1e6),
                update_us=int(d.update_interval * 1e6),
                min_regions=min_regions,
                max_regions=max(d.max_regions, MAX_REGIONS),
                refresh_ms=REFRESH_MS if self.features.refresh_ms else 0,
            )

        return [ctx(self.sources, (*hot, prime)), ctx(self.fast, tuple(cold))]

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Program (or reprogram, counting what moved so far) the kdamonds for this topology and policy."""
        self.policy = policy
        r = roles(topology, policy)
        if not r.fast or not r.slow:
            raise CxltierdError("damos engine: needs a fast and a slow tier")
        ranges = {n: node_ranges(self.fs, n) for n in (*r.fast, *r.slow)}
        sources = tuple(n for n in r.slow if ranges[n])
        if not sources or not any(ranges[n] for n in r.fast):
            raise CxltierdError("damos engine: no online memory blocks on the slow or the fast nodes")
        if self.started:
            self._harvest()  # what the old schemes moved, before their indexes may change meaning
        kept = set(self._keys()) if self.started else set()
        self.fast, self.slow, self.kind, self.ranges, self.sources = r.fast, r.slow, dict(r.kind), ranges, sources
        self.coverage = self.scan(policy)
        self.scanned = None
        if not self.started:
            self.kdamonds.start(self.contexts())
            self.started = True
            self.applied = {}  # fresh schemes: everything they apply is new
            return
        self._recommit(kept)

    def _recommit(self, kept: set[tuple[int, int]]) -> None:
        """Commit the current contexts after a change of structure; `kept`: the scheme keys programmed before."""
        self._commit()
        # A commit keeps the stats of the schemes it updates in place (same index) and creates the others anew:
        # count the kept ones from where they were, the others from what they hold now.
        fresh = self._read_applied()
        self.applied = {k: self.applied.get(k, v) if k in kept else v for k, v in fresh.items()}

    def rescan(self, now: float) -> None:
        """Enumerate the covered cgroups again (every RESCAN_S) and re-commit the schemes when they changed.
        A cgroup gone between the enumeration and the commit makes the kernel refuse it: said in the log, and
        tried again at the next enumeration."""
        assert self.policy is not None
        if self.scanned is None:
            self.scanned = now
        if now - self.scanned < RESCAN_S:
            return
        self.scanned = now
        try:
            cov = self.scan(self.policy)
        except CxltierdError as e:
            self.notes.append(f"damos engine: enumerating the cgroups failed: {e}")
            return
        if cov == self.coverage:
            return
        self._harvest()
        kept = set(self._keys())
        self.coverage = cov
        try:
            self._recommit(kept)
        except CxltierdError as e:
            self.coverage = Coverage(groups=(), union=None)  # unknown: the next enumeration commits what it finds
            self.notes.append(f"damos engine: re-programming the schemes for the cgroups found failed: {e}")

    def _commit(self) -> None:
        """Program the current contexts into the running kdamonds. The kernel updates each scheme in place
        (damos_commit leaves its stats alone), so the counters go on and no migration is lost."""
        for i, ctx in enumerate(self.contexts()):
            self.kdamonds.commit(i, ctx)

    def gate(self, gates: Gates) -> None:
        """Switch the migrate schemes on or off (a scheme that is off is committed as `stat`)."""
        if gates != self.gates:
            self.gates = gates
            if self.started:
                self._commit()

    # ---- tracking and outcomes -------------------------------------------------------------------------------
    def sample(self, now: float) -> Sample:
        """Node memory now, and the stat scheme's regions of both kdamonds as heat (accesses/s)."""
        assert self.policy is not None
        self.rescan(now)
        mem = node_memory(self.fs, [*self.fast, *self.slow])
        self._feed_goals(mem.free, mem.total)  # MemFree, as the kernel's own node_mem_free_bp reads it
        regions: list[RegionHeat] = []
        aggr_s = self.policy.damon.aggregation_interval
        for i, nodes in ((HOT, self.sources), (COLD, self.fast)):
            try:
                self.kdamonds.update(i, "update_schemes_tried_regions")
                damon_regions = parse_regions(self.fs, i, scheme=0)
            except HostFSError:
                continue
            for r in damon_regions:
                node = next((n for n in nodes for lo, hi in self.ranges.get(n, []) if lo <= r.start < hi), nodes[0])
                regions.append(RegionHeat(0, r.start, r.end - r.start, node, r.nr_accesses / aggr_s, r.age * aggr_s))
        return Sample(
            regions=tuple(regions),
            free_bytes=mem.free,
            available_bytes=mem.available,
            total_bytes=mem.total,
            resolution=1.0 / aggr_s,
        )

    def _feed_goals(self, free: dict[int, int], total: dict[int, int]) -> None:
        """user_input goals: tell the kernel the fastest node's free memory now, in basis points, as its own
        node_mem_free_bp would (a goals-only commit when it changed)."""
        node = self.fast[0] if self.fast else None
        if node is None or not total.get(node) or node not in free:
            return
        free_bp = 10000 * free[node] // total[node]
        usage = (10000 - free_bp, free_bp)
        if usage != self.usage_bp:
            self.usage_bp = usage
            if self.started and self.goal_metric() == "user_input":
                self._commit()

    def _schemes(self) -> list[tuple[int, int, int, int]]:
        """(kdamond, scheme, src, dst) of every migrate scheme, as programmed now."""
        return list(self.layout)

    def _keys(self) -> list[tuple[int, int]]:
        return [(i, j) for i, j, _, _ in self._schemes()]

    def _read_applied(self) -> dict[tuple[int, int], int]:
        """sz_applied of every migrate scheme, exact: after an update_schemes_stats command on each kdamond."""
        out: dict[tuple[int, int], int] = {}
        for i in (HOT, COLD):
            try:
                self.kdamonds.update(i, "update_schemes_stats")
            except HostFSError:
                continue
            for k, j, _, _ in self._schemes():
                if k == i:
                    applied = scheme_stats(self.fs, i, j).get("sz_applied")
                    if applied is not None:
                        out[(i, j)] = applied
        return out

    def _harvest(self) -> None:
        """Bank what every migrate scheme moved since the last look (into pending transfers)."""
        now = self._read_applied()
        for i, j, src, dst in self._schemes():
            if (i, j) not in now:
                continue
            before = self.applied.get((i, j), 0)
            delta = now[(i, j)] - before if now[(i, j)] >= before else now[(i, j)]  # lower: reset, all is new
            self.applied[(i, j)] = now[(i, j)]
            if delta > 0:
                self.pending.append(Transfer(src, dst, delta, delta // PAGE_SIZE))

    def apply(self, plan: Plan, now: float) -> Outcome:
        """What the migrate schemes moved since the last call (their sz_applied deltas)."""
        self._harvest()
        moved: dict[tuple[int, int], int] = {}
        for t in self.pending:
            moved[(t.src, t.dst)] = moved.get((t.src, t.dst), 0) + t.bytes
        self.pending = []
        notes, self.notes = tuple(self.notes), []
        transfers = tuple(Transfer(s, d, b, b // PAGE_SIZE) for (s, d), b in sorted(moved.items()))
        return Outcome(transfers=transfers, errors=notes)

    def stop(self) -> None:
        """Turn off and remove the kdamonds."""
        self.kdamonds.cleanup()
        self.started = False
