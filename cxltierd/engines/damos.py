"""The DAMOS engine: the kernel migrates, cxltierd programs and watches it (kernels >= 6.11).

Two paddr kdamonds (DAMOS migrate actions work on paddr only on 6.12; vaddr migrate_hot applies nothing):
- kdamond 0 monitors the slow nodes' physical ranges; its scheme 1 is `migrate_hot` to the fast node;
- kdamond 1 monitors the fast nodes' ranges; its scheme 1 is `migrate_cold` to the fastest slow node.
Scheme 0 of each is `stat` over every region, read back as heat. Quotas come from the policy's rate limit (half
for each direction, per second); hot means at least hot_threshold accesses/s, cold means no access for a
cooldown. The tier marks gate the schemes per node, which DAMOS watermarks (system-wide free memory) cannot
do: promotion runs while the fast node is below max_used_percent; demotion runs only while it has less than
100 - max_used_percent free. A scheme is switched by committing it as `stat`. A `processes.manage` cgroup
selector becomes a memcg filter, so only that cgroup's memory moves. Outcomes are the schemes' sz_applied
deltas.
"""

from __future__ import annotations

import math
from typing import Any

from cxltierd.engines.base import Outcome, Plan, RegionHeat, Sample, Transfer
from cxltierd.engines.damon import U32_MAX, Context, Kdamonds, Scheme, Target, parse_regions, scheme_stats
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.policy.decide import roles
from cxltierd.policy.schema import Policy
from cxltierd.procs import node_memory
from cxltierd.topology import Topology

PAGE = 4096


def node_ranges(fs: HostFS, node: int) -> list[tuple[int, int]]:
    """Physical [start, end) ranges of a node's memory blocks, merged."""
    bs = fs.read_int("/sys/devices/system/memory/block_size_bytes", 16)
    blocks = sorted(
        int(e[6:])
        for e in fs.listdir(f"/sys/devices/system/node/node{node}")
        if e.startswith("memory") and e[6:].isdigit()
    )
    out: list[tuple[int, int]] = []
    for b in blocks:
        start, end = b * bs, (b + 1) * bs
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


class DamosEngine:
    name = "damos"
    kernel_executed = True

    def __init__(self, fs: HostFS, kdamonds: Kdamonds) -> None:
        self.fs = fs
        self.kdamonds = kdamonds
        self.policy: Policy | None = None
        self.fast: tuple[int, ...] = ()
        self.slow: tuple[int, ...] = ()
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        self.kind: dict[int, str] = {}
        self.active = {"hot": True, "cold": False}
        self.started = False
        self.applied = {"hot": 0, "cold": 0}

    # ---- programming -----------------------------------------------------------------------------------------
    def memcg(self, policy: Policy) -> str | None:
        cgroups = [s.cgroup for s in policy.processes.manage if s.cgroup]
        return cgroups[0] if cgroups else None

    def contexts(self) -> list[Context]:
        p = self.policy
        assert p is not None
        d = p.damon
        aggr_s = d.aggregation_interval
        samples = max(1, round(aggr_s / d.sample_interval))
        hot_min = min(samples, max(1, math.ceil(p.hotness.hot_threshold * aggr_s)))
        quota = int(p.rate_limit.mb_per_s * (1 << 20) / 2)
        memcg = self.memcg(p)
        hot = Scheme(
            action="migrate_hot" if self.active["hot"] and not p.dry_run else "stat",
            target_nid=self.fast[0],
            nr_accesses=(hot_min, U32_MAX),
            age=(1, U32_MAX),
            quota_bytes=quota,
            reset_interval_ms=1000,
            memcg=memcg,
        )
        cold = Scheme(
            action="migrate_cold" if self.active["cold"] and not p.dry_run else "stat",
            target_nid=self.slow[0],
            nr_accesses=(0, 0),
            age=(max(1, int(p.cooldown / aggr_s)), U32_MAX),
            quota_bytes=quota,
            reset_interval_ms=1000,
            memcg=memcg,
        )

        def ctx(nodes: tuple[int, ...], scheme: Scheme) -> Context:
            regions = tuple(r for n in nodes for r in self.ranges.get(n, []))
            return Context(
                operations="paddr",
                targets=(Target(regions=regions),),
                schemes=(Scheme(), scheme),
                sample_us=int(d.sample_interval * 1e6),
                aggr_us=int(aggr_s * 1e6),
                update_us=int(d.update_interval * 1e6),
                min_regions=max(d.min_regions, 100),
                max_regions=max(d.max_regions, 1000),
            )

        return [ctx(self.slow, hot), ctx(self.fast, cold)]

    def configure(self, topology: Topology, policy: Any) -> None:
        self.policy = policy
        r = roles(topology, policy)
        if not r.fast or not r.slow:
            raise CxltierdError("damos engine: needs a fast and a slow tier")
        self.fast, self.slow, self.kind = r.fast, r.slow, dict(r.kind)
        self.ranges = {n: node_ranges(self.fs, n) for n in (*self.fast, *self.slow)}
        if not self.started:
            self.kdamonds.start(self.contexts())
            self.started = True
        else:
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
            for i, ctx in enumerate(self.contexts()):
                self.kdamonds.commit(i, ctx)

    # ---- tracking and outcomes -------------------------------------------------------------------------------
    def sample(self, now: float) -> Sample:
        assert self.policy is not None
        free, total = node_memory(self.fs, [*self.fast, *self.slow])
        regions: list[RegionHeat] = []
        aggr_s = self.policy.damon.aggregation_interval
        for i, nodes in enumerate((self.slow, self.fast)):
            try:
                self.kdamonds.update(i, "update_schemes_tried_regions")
                damon_regions = parse_regions(self.fs, i, scheme=0)
            except HostFSError:
                continue
            for r in damon_regions:
                node = next((n for n in nodes for lo, hi in self.ranges.get(n, []) if lo <= r.start < hi), nodes[0])
                regions.append(RegionHeat(0, r.start, r.end - r.start, node, r.nr_accesses / aggr_s, r.age * aggr_s))
        self._gate(free, total)
        return Sample(regions=tuple(regions), free_bytes=free, total_bytes=total)

    def apply(self, plan: Plan, now: float) -> Outcome:
        transfers = []
        for i, (kind, src, dst) in enumerate(
            (("hot", self.slow[0], self.fast[0]), ("cold", self.fast[0], self.slow[0]))
        ):
            try:
                self.kdamonds.update(i, "update_schemes_stats")
                applied = scheme_stats(self.fs, i, 1).get("sz_applied", self.applied[kind])
            except HostFSError:
                continue
            delta = max(0, applied - self.applied[kind])
            self.applied[kind] = applied
            if delta:
                transfers.append(Transfer(src, dst, delta, delta // PAGE))
        return Outcome(transfers=tuple(transfers))

    def stop(self) -> None:
        self.kdamonds.cleanup()
        self.started = False
