"""The per-tier performance model: each node's idle read latency and peak bandwidth (HMAT/CDAT, else a default for
its tier kind) and its loaded latency, which grows as the bandwidth in use approaches the peak.

Loaded latency: L(u) = idle x (1 + ALPHA x u / (1 - u)) with utilisation u = demand / bandwidth, u capped at U_MAX
(a queue's waiting time; at half the peak a node answers in 1.5x its idle latency, at 90% in 5.5x). Demand is
accesses/s x LINE bytes: every sampled access stands for one cache line. The figures are a model, not a
measurement: HMAT gives the idle latency and the peak, the curve's shape is assumed the same for every tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cxltierd.topology import Topology

LINE = 64  # bytes one access moves
ALPHA = 0.5
U_MAX = 0.95
MB = 1_000_000  # HMAT bandwidth is in MB/s
# Idle latency (ns) and peak bandwidth (MB/s) for a node without HMAT figures, by tier kind.
DEFAULTS: dict[str, tuple[float, float]] = {
    "hbm": (130.0, 400_000.0),
    "ddr": (90.0, 100_000.0),
    "cxl": (250.0, 30_000.0),
    "cxl-far": (380.0, 20_000.0),
    "pmem": (350.0, 10_000.0),
    "unknown": (300.0, 20_000.0),
}


@dataclass(frozen=True)
class NodePerf:
    """One node's idle read latency (ns) and peak read bandwidth (bytes/s)."""

    idle_ns: float
    bandwidth: float

    def utilisation(self, accesses: float) -> float:
        """Share of the peak that `accesses` per second use, capped at U_MAX."""
        return min(U_MAX, max(0.0, accesses * LINE / self.bandwidth)) if self.bandwidth > 0 else U_MAX

    def latency(self, accesses: float) -> float:
        """Loaded read latency (ns) at `accesses` per second."""
        u = self.utilisation(accesses)
        return self.idle_ns * (1.0 + ALPHA * u / (1.0 - u))


def node_perf(topology: Topology) -> dict[int, NodePerf]:
    """Every memory node's figures: HMAT read latency and bandwidth where the node has them, else its kind's."""
    out = {}
    for n in topology.nodes:
        idle, bw = DEFAULTS.get(n.kind, DEFAULTS["unknown"])
        if n.hmat is not None and n.hmat.read_latency_ns and n.hmat.read_bandwidth_mbps:
            idle, bw = float(n.hmat.read_latency_ns), float(n.hmat.read_bandwidth_mbps)
        out[n.node] = NodePerf(idle, bw * MB)
    return out


def mean_latency(perf: Mapping[int, NodePerf], demand: Mapping[int, float]) -> float:
    """Access-weighted mean loaded latency (ns) of node demands (accesses/s); 0 without accesses."""
    total = sum(demand.values())
    if total <= 0:
        return 0.0
    return sum(a * perf[n].latency(a) for n, a in demand.items() if n in perf and a > 0) / total
