#!/usr/bin/env python3
"""Tenants (issue 12): guarantees, caps and weights of the fast tier, on the shipped tenants scenarios.

    .venv/bin/python benchmarks/tenants.py [--seeds 1,2,3] [--duration S] [--jobs 2] [--markdown]

Each scenario runs from the same seed under three placers on a fresh simulated memory system: cxltierd with the
scenario's tenants policy (TENANTS below), cxltierd without tenants (the default policy), and the promote-on-access
baseline (emulate/baselines.py). After every tick the benchmark reads the simulator's true access rates and
placement, and measures (from SETTLE seconds after the last tenant started, when placement has converged):
- lat: the latency tenant's share of its own accesses served by the fast tier;
- jain: Jain's fairness index of weighted fast-tier shares, (sum x)^2 / (n sum x^2) over the tenants with a fair
  share, where x is a tenant's fast-tier bytes over its weighted max-min fair share (policy/shares.targets on the
  true hot bytes and heat: what an exact allocator would give) - 1.0 when every tenant holds its fair share;
- below: seconds a tenant's hot bytes on the fast tier spent more than two regions below its guarantee
  (min(fast_min, its hot bytes): regions at the policy's promotion floor, hot_threshold or min_samples sampled
  accesses, or above), and above: seconds more than two regions above its cap, plus what it allocates by first touch in one interval (targets: 0);
  a region being copied counts on its target node;
- ping-pong: regions the loop sent back to the node they left within two cooldowns (the loop's own count);
- total: the share of all accesses served by the fast tier; its cost is the points lost against cxltierd without
  tenants (target: at most 3, for scenarios without a cap: a cap on the hottest tenant gives up share by design).
Printed per scenario and placer: the mean over seeds and the spread (min-max). Exits 1 naming a missed target.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxltierd.emulate import SimulatedMemory, baselines, read_scenario
from cxltierd.emulate.simulate import _host
from cxltierd.engines.base import Engines
from cxltierd.loop import Decide, Loop
from cxltierd.policy.decide import decide as cxltierd_decide
from cxltierd.policy.roles import fast_capacity, roles
from cxltierd.policy.schema import Policy, build_policy
from cxltierd.policy.shares import targets
from cxltierd.policy.tenants import budgets, tenant_of

MiB = 1 << 20
SETTLE = 60.0  # seconds after the last tenant started before measuring
TARGET_COST = 3.0  # points of total fast-tier share the budgets may cost
PLACERS = ("budgets", "no budgets", "promote-on-access")

TENANTS: dict[str, list[dict[str, Any]]] = {
    "tenants-latency-batch": [
        {"name": "inference", "match": {"cgroup": "/inference.slice"}, "fast_min": "320MiB", "class": "latency"},
        {"name": "batch", "match": {"cgroup": "/batch.slice"}},
    ],
    "tenants-weighted": [
        {"name": "a", "match": {"cgroup": "/a.slice"}, "weight": 4, "class": "latency"},
        {"name": "b", "match": {"cgroup": "/b.slice"}, "weight": 2},
        {"name": "c", "match": {"cgroup": "/c.slice"}, "weight": 1},
    ],
    "tenants-growth-cap": [
        {"name": "web", "match": {"cgroup": "/web.slice"}, "fast_min": "512MiB", "class": "latency"},
        {"name": "llm", "match": {"cgroup": "/llm.slice"}, "fast_max": "1GiB"},
    ],
}


@dataclass(frozen=True)
class Result:
    """One placer's run of one scenario and seed."""

    scenario: str
    placer: str
    seed: int
    lat: float  # latency tenant's fast-served share of its accesses
    jain: float
    below: float  # seconds below a guarantee
    above: float  # seconds above a cap
    total: float  # fast-served share of all accesses
    seconds: float  # wall time of the run
    ping_pong: int = 0  # regions sent back to the node they left within two cooldowns


def run_one(job: tuple[str, str, int, float | None]) -> Result:
    """Simulate one scenario under one placer and measure the tenants after every tick."""
    scenario, placer, seed, duration = job
    t0 = time.perf_counter()
    sc = read_scenario(scenario)
    tenants_policy = build_policy({"tenants": TENANTS[scenario]})
    sim = SimulatedMemory(sc, _host(sc), seed=seed)
    pol: Policy = replace(tenants_policy if placer == "budgets" else Policy(), interval=sc.interval)
    decide: Decide = cxltierd_decide
    if placer == "promote-on-access":
        pol = replace(pol, hotness=replace(pol.hotness, half_life=0.0))
        decide = baselines.promote_on_access()
    loop = Loop(sim.topology, Engines("simulated", sim, sim), pol, decide=decide)
    tenants = tenants_policy.tenants
    fast = set(roles(sim.topology, tenants_policy).fast)
    capacity = fast_capacity(sim.topology, tenants_policy)
    bud = budgets(tenants, capacity)
    latency = next(t.name for t in tenants if t.klass == "latency")
    who = {p.pid: tenant_of(tenants, sample_process(p)) for p in sc.processes}
    start = max(p.start_at for p in sc.processes) + SETTLE
    end = duration if duration is not None else sc.duration
    dt = sc.interval
    lat_fast = lat_all = all_fast = all_acc = below = above = 0.0
    jains: list[float] = []
    # hot as the policy judges it: at least hot_threshold and min_samples sampled accesses (Planner.floor)
    h = tenants_policy.hotness
    threshold = max(h.hot_threshold, h.min_samples / (sc.sample_fraction * dt) if sc.sample_fraction > 0 else 0.0)
    usable = sum(sim.capacity()[n] * 0.9 for n in fast) - sum(s.used for s in sc.nodes if s.node in fast)
    # first touch puts what a tenant allocates within an interval where the kernel likes; the next tick sheds it
    grown: dict[str, float] = dict.fromkeys(bud, 0.0)
    for p in sc.processes:
        g = p.growth
        if g is not None:
            grown[who[p.pid]] += g.grow_rate * dt
    t = 0.0
    while t + dt <= end + 1e-9:
        t += dt
        loop.tick(t)
        if t < start:
            continue
        rates, where, sizes = sim.rates_at(t), sim.placement(), sim.region_sizes()
        where.update({k: c[1] for k, c in sim.in_flight().items() if k in where})  # a planned copy: its target
        fast_b: dict[str, int] = dict.fromkeys(bud, 0)
        demand: dict[str, int] = dict.fromkeys(bud, 0)
        hot_fast: dict[str, int] = dict.fromkeys(bud, 0)
        heat: dict[str, float] = dict.fromkeys(bud, 0.0)
        for key, node in where.items():
            name, rate, size = who.get(key[0], "other"), rates.get(key, 0.0), sizes[key]
            on_fast = node in fast
            fast_b[name] += size if on_fast else 0
            all_acc += rate * dt
            all_fast += rate * dt if on_fast else 0.0
            if name == latency:
                lat_all += rate * dt
                lat_fast += rate * dt if on_fast else 0.0
            if rate >= threshold:
                demand[name] += size
                heat[name] += rate
                hot_fast[name] += size if on_fast else 0
        fair = targets(bud, demand, heat, int(usable))
        xs = [fast_b[n] / fair[n] for n in bud if fair[n] > 0]
        if xs:
            jains.append(sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)))
        slack = 2 * sc.region_size
        if any(hot_fast[n] + slack < min(bud[n].fast_min, demand[n]) for n in bud):
            below += dt
        if any(fast_b[n] > bud[n].fast_max + slack + grown[n] for n in bud):
            above += dt
    return Result(
        scenario,
        placer,
        seed,
        lat=lat_fast / lat_all if lat_all else 0.0,
        jain=sum(jains) / len(jains) if jains else 1.0,
        below=below,
        above=above,
        total=all_fast / all_acc if all_acc else 0.0,
        seconds=time.perf_counter() - t0,
        ping_pong=loop.totals.ping_pong,
    )


def sample_process(spec: Any) -> Any:
    """The Process a scenario's process spec stands for (what tenant selectors match)."""
    from cxltierd.model import Process

    return Process(spec.pid, spec.name, spec.cmdline or spec.name, spec.cgroup)


def spread(values: list[float], fmt: str) -> str:
    """Mean (min-max) of the values, each formatted with `fmt`."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def table(results: list[Result]) -> str:
    """The README's table: one row per scenario and placer, means over seeds with the spread."""
    seeds = sorted({r.seed for r in results})
    lines = [
        "| scenario | placer | latency tenant's fast share, % | Jain (weighted) | s below guarantee | s above cap |"
        " total fast share, % | cost vs no budgets, points | ping-pong |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sc in TENANTS:
        base = {r.seed: r.total for r in results if r.scenario == sc and r.placer == "no budgets"}
        for placer in PLACERS:
            rows = [r for r in results if r.scenario == sc and r.placer == placer]
            if not rows:
                continue
            cost = [100 * (base[r.seed] - r.total) for r in rows if r.seed in base]
            lines.append(
                f"| {sc} | {placer} | {spread([100 * r.lat for r in rows], '.1f')} | {spread([r.jain for r in rows], '.3f')}"
                f" | {spread([r.below for r in rows], '.0f')} | {spread([r.above for r in rows], '.0f')}"
                f" | {spread([100 * r.total for r in rows], '.1f')} | {spread(cost, '+.2f') if cost else '-'}"
                f" | {spread([float(r.ping_pong) for r in rows], '.0f')} |"
            )
    lines.append(f"\n{len(seeds)} seed(s): {', '.join(map(str, seeds))}; mean (min-max).")
    return "\n".join(lines)


def missed(results: list[Result]) -> list[str]:
    """The targets the budgets missed: any second below a guarantee or above a cap, a cost above TARGET_COST."""
    out = []
    for sc in TENANTS:
        rows = [r for r in results if r.scenario == sc and r.placer == "budgets"]
        base = {r.seed: r.total for r in results if r.scenario == sc and r.placer == "no budgets"}
        for r in rows:
            if r.below > 0:
                out.append(f"{sc} seed {r.seed}: {r.below:g} s below a guarantee (target 0)")
            if r.above > 0:
                out.append(f"{sc} seed {r.seed}: {r.above:g} s above a cap (target 0)")
            capped = any("fast_max" in t for t in TENANTS[sc])  # a cap gives up fast share by design
            if r.seed in base and 100 * (base[r.seed] - r.total) > TARGET_COST and not capped:
                cost = 100 * (base[r.seed] - r.total)
                out.append(f"{sc} seed {r.seed}: budgets cost {cost:.2f} points of fast share (target {TARGET_COST:g})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds [1,2,3]")
    ap.add_argument("--duration", type=float, default=None, help="simulated seconds [the scenario's]")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--scenario", action="append", choices=list(TENANTS), help="only this scenario (repeatable)")
    ap.add_argument("--markdown", action="store_true", help="print only the README table")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    jobs = [(sc, p, s, args.duration) for sc in (args.scenario or TENANTS) for p in PLACERS for s in seeds]
    if args.jobs > 1:
        with Pool(args.jobs) as pool:
            results = pool.map(run_one, jobs)
    else:
        results = [run_one(j) for j in jobs]
    if not args.markdown:
        for r in results:
            print(
                f"{r.scenario:<22} {r.placer:<18} seed {r.seed}: latency tenant {100 * r.lat:5.1f}%  jain {r.jain:.3f}"
                f"  below {r.below:4.0f}s  above {r.above:4.0f}s  total {100 * r.total:5.1f}%  ping-pong {r.ping_pong}"
                f"  ({r.seconds:.1f}s)"
            )
        print()
    print(table(results))
    bad = missed(results)
    for m in bad:
        print(f"tenants.py: target missed: {m}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
