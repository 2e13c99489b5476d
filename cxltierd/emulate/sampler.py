"""The sampler of the simulated memory system: accesses credited to nodes, and what a DAMON-like tracker sees of them.

Accesses are never simulated one by one: each region's true accesses over an interval come in closed form from its
workload (cxltierd.emulate.workload), split at the moment the region changes node. The interval runs from the
previous sample (`t_sample`, scenario time) to now. `iv[n]` is what node n served in the current interval; a
region's accesses credited before it changed node are kept in its process's `pre` so they are counted once.

The observed rate adds Poisson sampling noise (a tracker seeing `sample_fraction` of the accesses; 0 means exact
rates), drawn from random.Random(seed) in region order, so one seed gives one run. With a performance model
(`perf`), every interval's accesses are also charged each node's loaded latency at that interval's demand. A region's age is the time its
observed level has held: a change by more than half (and by more than 3 sampled accesses) starts a new level.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from cxltierd.emulate.store import VBASE, Proc
from cxltierd.model import RegionHeat
from cxltierd.policy.perf import NodePerf


class Sampler:
    """Per-interval access accounting and the noisy per-region observation of it."""

    def __init__(self, seed: int, sample_fraction: float, region_size: int, fast_nodes: frozenset[int], size: int):
        """`size`: one more than the highest node id."""
        self.sample_fraction = sample_fraction
        self.region_size = region_size
        self.fast_nodes = fast_nodes
        self._rng = random.Random(seed)
        self.iv = [0.0] * size  # accesses served per node in the current interval
        self.node_total = [0.0] * size
        self.total = 0.0
        self.fast = 0.0
        self.t_sample = 0.0  # start of the current observation interval
        self.last_share: float | None = None
        self.resolution = 0.0
        self.perf: dict[int, NodePerf] = {}  # node -> performance model (cxltierd.policy.perf); empty: no latency
        self.latency = 0.0  # accesses x loaded latency (ns) served so far

    def settle(self, p: Proc, i: int, t: float) -> None:
        """Credit region i's accesses since the interval start up to t to its current node."""
        acc = p.work.integrate_one(i, self.t_sample, t)
        self.iv[p.node[i]] += acc - p.pre.get(i, 0.0)
        p.pre[i] = acc

    def settle_exit(self, p: Proc, t: float) -> None:
        """Credit the accesses of every allocated region of p, exiting at t, to its node."""
        bulk = p.work.integrate(self.t_sample, t)
        for i in range(p.high):
            nd = p.node[i]
            if nd >= 0:
                self.iv[nd] += bulk[i] - p.pre.get(i, 0.0)

    def take(self, procs: Sequence[Proc], t: float) -> list[RegionHeat]:
        """Close the interval at t and report every live region's observed heat over it.

        A repeated sample (no time passed) reports the last observation again."""
        dt = t - self.t_sample
        if dt < 1e-9:  # a repeated sample: report the last observation again
            dt, t = 0.0, self.t_sample
        regions: list[RegionHeat] = []
        iv = self.iv
        f = self.sample_fraction
        scale = 1.0 / (f * dt) if f > 0 and dt > 0 else (1.0 / dt if dt > 0 else 0.0)
        floor = 3.0 * scale if f > 0 else 0.0  # a change of fewer than 3 sampled accesses is noise
        if dt > 0:
            self.resolution = scale if f > 0 else 0.0  # accesses/s one sampled access stands for
        for p in procs:
            if p.live:
                if dt > 0:
                    self._observe_process(p, t, dt, scale, floor, regions)
                else:
                    rs, node, sizes, obs, age = self.region_size, p.node, p.work.sizes, p.obs, p.age
                    regions += [
                        RegionHeat(p.pid, VBASE + i * rs, sizes[i], node[i], obs[i], age[i])
                        for i in range(p.high)
                        if node[i] >= 0
                    ]
        if dt > 0:
            total = sum(iv)
            fast = sum(iv[n] for n in self.fast_nodes)
            self.total += total
            self.fast += fast
            for n, a in enumerate(iv):
                self.node_total[n] += a
                if a > 0 and n in self.perf:
                    self.latency += a * self.perf[n].latency(a / dt)
            self.last_share = fast / total if total > 0 else None
            self.iv = [0.0] * len(iv)
        self.t_sample = t
        return regions

    def _observe_process(self, p: Proc, t: float, dt: float, scale: float, floor: float, out: list[RegionHeat]) -> None:
        """Credit p's accesses over [interval start, t] to nodes, observe them (noise, age), append RegionHeats."""
        iv, node, level, age, sizes = self.iv, p.node, p.level, p.age, p.work.sizes
        pid, rs, f = p.pid, self.region_size, self.sample_fraction
        bulk = p.work.integrate(self.t_sample, t)
        for i, prev in p.pre.items():  # already credited to the nodes the region was on before
            iv[node[i]] -= prev
        p.pre = {}
        observed = p.obs = self._observe(bulk, f, scale) if f > 0 else [a * scale for a in bulk]
        append = out.append
        for i in range(p.high):
            nd = node[i]
            if nd < 0:
                continue
            iv[nd] += bulk[i]
            o, lv = observed[i], level[i]
            d = o - lv if o > lv else lv - o
            if d > floor and d + d > (o if o > lv else lv):  # changed by more than half: a new level
                level[i] = o
                a = 0.0
            else:
                a = age[i] + dt
            age[i] = a
            append(RegionHeat(pid, VBASE + i * rs, sizes[i], nd, o, a))

    def _observe(self, bulk: list[float], f: float, scale: float) -> list[float]:
        """What the tracker sees of accesses `bulk`: a Poisson count of f x bulk (Gaussian approximation above 10),
        times `scale` (1 / (f x seconds)): a noisy per-second estimate, never negative, 0 for untouched regions."""
        rand, gauss, exp, sqrt = self._rng.random, self._rng.gauss, math.exp, math.sqrt
        out = []
        for a in bulk:
            m = a * f
            if m <= 0.0:
                out.append(0.0)
            elif m < 10.0:  # inversion: one uniform draw
                k, term, u = 0, exp(-m), rand()
                cum = term
                while u > cum and k < 100:
                    k += 1
                    term *= m / k
                    cum += term
                out.append(k * scale)
            else:
                x = m + sqrt(m) * gauss()
                out.append(x * scale if x > 0.0 else 0.0)
        return out
