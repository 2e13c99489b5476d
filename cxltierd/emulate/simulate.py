"""Run a scenario faster than real time with cxltierd's policy or a baseline; shared by `cxltierd simulate` and
benchmarks/placement.py. Each run gets a fresh simulator from the same seed, so runs are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from cxltierd.emulate import Scenario, SimulatedMemory, baselines, host_topology, read_scenario
from cxltierd.emulate.simras import RasSummary, SimulatedRas
from cxltierd.engines.base import Engines
from cxltierd.loop import Decide, Loop
from cxltierd.policy.decide import decide as cxltierd_decide
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology

PLACERS = ("cxltierd", *baselines.BASELINES)


_hosts: dict[tuple[str, str], Topology] = {}


def _host(sc: Scenario) -> Topology:
    """A scenario host's topology, discovered once per process (every run of a benchmark shares it)."""
    key = (sc.host, str(Path(sc.source).parent))
    if key not in _hosts:
        _hosts[key] = host_topology(sc)
    return _hosts[key]


@dataclass
class RunResult:
    """One placer's run of a scenario: the fast-tier share overall and per interval, and what it moved."""

    placer: str
    share: float  # share of all accesses served by the fastest tier over the run
    mean_latency_ns: float = 0.0  # access-weighted mean loaded latency over the run (cxltierd.policy.perf)
    series: list[tuple[float, float]] = field(default_factory=list)  # (time, share in that interval)
    promoted_bytes: int = 0  # moved to a faster tier
    demoted_bytes: int = 0
    ping_pong: int = 0  # regions sent back where they came from within two cooldowns
    failed_pages: int = 0
    ticks: int = 0
    moved: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes moved in that interval)
    latency: list[tuple[float, float]] = field(default_factory=list)  # (time, mean loaded latency ns in that interval)
    # with run(heat=True): (time, accesses/s of each region by (pid, start address)) per interval, and process names
    heat: list[tuple[float, dict[tuple[int, int], float]]] = field(default_factory=list)
    processes: dict[int, str] = field(default_factory=dict)
    region_size: int = 0
    ras: RasSummary | None = None  # cxltierd's run of a scenario with ras_events: health, drains

    @property
    def migrated_bytes(self) -> int:
        """Bytes promoted plus bytes demoted."""
        return self.promoted_bytes + self.demoted_bytes

    def share_between(self, t0: float, t1: float) -> float | None:
        """Mean interval share for intervals ending in (t0, t1], or None when there are none."""
        values = [s for t, s in self.series if t0 < t <= t1]
        return sum(values) / len(values) if values else None


def run(
    scenario: str,
    placer: str = "cxltierd",
    policy: Policy | None = None,
    seed: int | None = None,
    duration: float | None = None,
    interval: float | None = None,
    heat: bool = False,
) -> RunResult:
    """Simulate `scenario` (a shipped name or a YAML path) under one placer; with `heat`, record every region's
    access rate at every interval (RunResult.heat)."""
    sc = read_scenario(scenario)
    host = _host(sc)
    sim = SimulatedMemory(sc, host, seed=seed)
    dt = interval or sc.interval
    pol = replace(policy or Policy(), interval=dt, dry_run=False)
    decide: Decide
    if placer == "cxltierd":
        decide = cxltierd_decide
    else:
        pol = replace(pol, hotness=replace(pol.hotness, half_life=0.0))  # baselines see raw samples
        decide = {
            "static": baselines.static,
            "promote-on-access": baselines.promote_on_access,
            "age": baselines.age,
            "oracle": lambda: baselines.oracle(sim.mean_rates),
            "oracle-latency": lambda: baselines.latency_oracle(sim.mean_rates),
        }[placer]()
    ras = SimulatedRas(sc, sim) if placer == "cxltierd" and sc.ras_events else None
    loop = Loop(sim.topology, Engines("simulated", sim, sim), pol, ras.facts if ras else None, decide=decide)
    end = duration if duration is not None else sc.duration
    result = RunResult(placer=placer, share=0.0, processes={p.pid: p.name for p in sc.processes})
    result.region_size = sc.region_size
    try:
        _ticks(loop, sim, result, ras, dt, end, heat)
    finally:
        result.ras = ras.close() if ras is not None else None
    stats = sim.stats()
    rank = {n: tier.rank for tier in sim.topology.tiers for n in tier.nodes}
    for (src, dst), b in stats.migrated_bytes.items():
        if rank.get(dst, 99) < rank.get(src, 99):
            result.promoted_bytes += b
        else:
            result.demoted_bytes += b
    result.share = stats.fast_share or 0.0
    result.mean_latency_ns = stats.mean_latency_ns or 0.0
    result.ping_pong = loop.totals.ping_pong
    result.failed_pages = sum(stats.failed_pages.values())
    result.ticks = loop.totals.ticks
    return result


def _ticks(
    loop: Loop, sim: SimulatedMemory, result: RunResult, ras: SimulatedRas | None, dt: float, end: float, heat: bool
) -> None:
    """Tick the loop (RAS first, as the daemon does) until `end`, recording each interval into `result`."""
    t = 0.0
    moved = 0
    lat_sum, accesses = 0.0, 0.0
    while t + dt <= end + 1e-9:
        t += dt
        if ras is not None:
            ras.tick(t, loop)
        report = loop.tick(t)
        if ras is not None:
            ras.after(report, loop)
        if report.fast_share is not None:
            result.series.append((t, report.fast_share))
        now = sim.stats()
        total = sum(now.migrated_bytes.values())
        result.moved.append((t, total - moved))
        moved = total
        if now.total_accesses > accesses:
            result.latency.append((t, (now.latency - lat_sum) / (now.total_accesses - accesses)))
        lat_sum, accesses = now.latency, now.total_accesses
        if heat:
            result.heat.append((t, sim.true_rates()))
