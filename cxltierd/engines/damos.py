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
hot and cold pages, which is how cold memory got promoted in the lab. Two guards keep most cold pages where they
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
max_used_percent free. A scheme is switched by committing it as `stat`. A `processes.manage` cgroup selector
becomes a memcg filter, so only that cgroup's memory moves (that exact cgroup: DAMON matches no descendants).
Outcomes are the schemes' sz_applied deltas (bytes the kernel migrated: it counts only successful migrations).
"""

from __future__ import annotations

import math
from typing import Any

from cxltierd.engines.damon import U32_MAX, Context, Kdamonds, Scheme, Target, parse_regions, scheme_stats
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.model import Outcome, Plan, RegionHeat, Sample, Transfer
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import Policy
from cxltierd.procs import node_memory
from cxltierd.topology import Topology

PAGE = 4096
HOT, COLD = 0, 1  # kdamond indexes
MIN_REGIONS = 100  # damon.min_regions below this leaves regions too coarse to tell a hot set from its neighbours
MAX_REGIONS = 1000


def node_ranges(fs: HostFS, node: int) -> list[tuple[int, int]]:
    """Physical [start, end) ranges of a node's online memory blocks, merged."""
    bs = fs.read_int("/sys/devices/system/memory/block_size_bytes", 16)
    base = f"/sys/devices/system/node/node{node}"
    blocks = sorted(
        int(e[6:])
        for e in fs.listdir(base)
        if e.startswith("memory") and e[6:].isdigit() and fs.read_optional(f"{base}/{e}/state") in (None, "online")
    )
    out: list[tuple[int, int]] = []
    for b in blocks:
        start, end = b * bs, (b + 1) * bs
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def hot_min(policy: Policy) -> int:
    """nr_accesses (samples per aggregation interval that saw an access) from which a region is hot."""
    d = policy.damon
    samples = max(1, round(d.aggregation_interval / d.sample_interval))
    floor = max(policy.hotness.hot_threshold * d.aggregation_interval, policy.hotness.min_samples)
    return min(samples, max(1, math.ceil(floor - 1e-9)))


class DamosEngine:
    name = "damos"
    kernel_executed = True

    def __init__(self, fs: HostFS, kdamonds: Kdamonds) -> None:
        self.fs = fs
        self.kdamonds = kdamonds
        self.policy: Policy | None = None
        self.fast: tuple[int, ...] = ()
        self.slow: tuple[int, ...] = ()
        self.sources: tuple[int, ...] = ()  # slow nodes with memory: one migrate_hot scheme each
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        self.kind: dict[int, str] = {}
        self.active = {"hot": True, "cold": False}
        self.started = False
        self.applied: dict[tuple[int, int], int] = {}  # (kdamond, scheme) -> sz_applied seen last
        self.pending: list[Transfer] = []  # moved before a re-programming, not reported yet

    # ---- programming -----------------------------------------------------------------------------------------
    def memcg(self, policy: Policy) -> str | None:
        cgroups = [s.cgroup for s in policy.processes.manage if s.cgroup]
        return cgroups[0] if cgroups else None

    def contexts(self) -> list[Context]:
        p = self.policy
        assert p is not None
        d = p.damon
        aggr_s = d.aggregation_interval
        min_regions = max(d.min_regions, MIN_REGIONS)
        watched = sum(hi - lo for n in self.sources for lo, hi in self.ranges[n])
        trusted = max(1 << 20, watched // min_regions)  # DAMON's merge limit: bigger regions are still initial ones
        quota = int(p.rate_limit.mb_per_s * (1 << 20) / 2)
        memcg = self.memcg(p)
        promote = self.active["hot"] and not p.dry_run
        hot = tuple(
            Scheme(
                action="migrate_hot" if promote else "stat",
                target_nid=self.fast[0],
                sz=(PAGE, trusted),
                nr_accesses=(hot_min(p), U32_MAX),
                age=(1, U32_MAX),
                quota_bytes=max(PAGE, quota // len(self.sources)),
                reset_interval_ms=1000,
                weights=(0, 1000, 500),
                memcg=memcg,
                young=True,
                exclude=tuple(r for m in self.sources if m != n for r in self.ranges[m]),
            )
            for n in self.sources
        )
        cold = Scheme(
            action="migrate_cold" if self.active["cold"] and not p.dry_run else "stat",
            target_nid=self.slow[0],
            nr_accesses=(0, 0),
            age=(max(1, int(p.cooldown / aggr_s)), U32_MAX),
            quota_bytes=quota,
            reset_interval_ms=1000,
            weights=(0, 1000, 500),
            memcg=memcg,
            young=False,
        )

        prime = Scheme(
            action="lru_deprio",  # never applied: every page is filtered out after the young check
            nr_accesses=(1, U32_MAX),
            memcg=memcg,
            young=False,  # young pages are excluded (and aged); the two anon filters exclude the rest
            anon_both=True,
        )

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
            )

        return [ctx(self.sources, (*hot, prime)), ctx(self.fast, (cold,))]

    def configure(self, topology: Topology, policy: Any) -> None:
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
        if not self.started:
            self.kdamonds.start(self.contexts())
            self.started = True
            self.applied = {}  # fresh schemes: everything they apply is new
            return
        self._commit()
        # A commit keeps the stats of the schemes it updates in place (same index) and creates the others anew:
        # count the kept ones from where they were, the others from what they hold now.
        fresh = self._read_applied()
        self.applied = {k: self.applied.get(k, v) if k in kept else v for k, v in fresh.items()}

    def _commit(self) -> None:
        """Program the current contexts into the running kdamonds. The kernel updates each scheme in place
        (damos_commit leaves its stats alone), so the counters go on and no migration is lost."""
        for i, ctx in enumerate(self.contexts()):
            self.kdamonds.commit(i, ctx)

    def _gate(self, free: dict[int, int], total: dict[int, int]) -> None:
        """Switch promotion/demotion on or off by the fast node's marks; commit when that changes."""
        assert self.policy is not None
        node = self.fast[0]
        if node not in free or not total.get(node):
            return
        mark = self.policy.watermark(self.kind.get(node, "unknown"))
        used_pct = 100 * (total[node] - free[node]) / total[node]
        want = {"hot": used_pct < mark.max_used_percent, "cold": used_pct > mark.max_used_percent}
        if want != self.active:
            self.active = want
            self._commit()

    # ---- tracking and outcomes -------------------------------------------------------------------------------
    def sample(self, now: float) -> Sample:
        assert self.policy is not None
        free, total = node_memory(self.fs, [*self.fast, *self.slow])
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
        self._gate(free, total)
        return Sample(regions=tuple(regions), free_bytes=free, total_bytes=total, resolution=1.0 / aggr_s)

    def _schemes(self) -> list[tuple[int, int, int, int]]:
        """(kdamond, scheme, src, dst) of every migrate scheme, as programmed now."""
        out = [(HOT, 1 + j, n, self.fast[0]) for j, n in enumerate(self.sources)]
        return [*out, (COLD, 1, self.fast[0], self.slow[0])]

    def _keys(self) -> list[tuple[int, int]]:
        return [(i, j) for i, j, _, _ in self._schemes()]

    def _read_applied(self) -> dict[tuple[int, int], int]:
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
                self.pending.append(Transfer(src, dst, delta, delta // PAGE))

    def apply(self, plan: Plan, now: float) -> Outcome:
        self._harvest()
        moved: dict[tuple[int, int], int] = {}
        for t in self.pending:
            moved[(t.src, t.dst)] = moved.get((t.src, t.dst), 0) + t.bytes
        self.pending = []
        return Outcome(transfers=tuple(Transfer(s, d, b, b // PAGE) for (s, d), b in sorted(moved.items())))

    def stop(self) -> None:
        self.kdamonds.cleanup()
        self.started = False
