"""Per-tenant Prometheus families: bounded by the policy (its tenants plus `other`), never one series per process."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cxltierd.service.state import Snapshot


def tenant_families(s: Snapshot) -> Iterator[Metric]:
    """Memory and hot memory per tenant and tier, guarantee, cap, shortfall, moves, and the kernel's per-node view
    (memory.numa_stat of a tenant's cgroup). Nothing when the policy has no tenants."""
    if not s.tenants:
        return
    mem = GaugeMetricFamily(
        "cxltierd_tenant_memory_bytes", "Managed memory of a tenant, by tier.", labels=["tenant", "tier"]
    )
    hot = GaugeMetricFamily("cxltierd_tenant_hot_bytes", "Hot memory of a tenant, by tier.", labels=["tenant", "tier"])
    guar = GaugeMetricFamily("cxltierd_tenant_fast_guarantee_bytes", "A tenant's fast_min in bytes.", labels=["tenant"])
    cap = GaugeMetricFamily("cxltierd_tenant_fast_cap_bytes", "A tenant's fast_max in bytes.", labels=["tenant"])
    short = GaugeMetricFamily(
        "cxltierd_tenant_fast_shortfall_bytes",
        "Bytes a tenant's guarantee still misses on the fast tier: min(fast_min, hot bytes) - fast bytes.",
        labels=["tenant"],
    )
    moves = CounterMetricFamily("cxltierd_tenant_moves", "Regions of a tenant moved between tiers.", labels=["tenant"])
    tiers = [t.name for t in s.topology.tiers]
    for name, u in s.tenants.items():
        for tier in tiers:
            mem.add_metric([name, tier], u.bytes.get(tier, 0))
            hot.add_metric([name, tier], u.hot.get(tier, 0))
        guar.add_metric([name], u.guarantee)
        cap.add_metric([name], u.cap)
        short.add_metric([name], u.shortfall)
        moves.add_metric([name], s.tenant_moves.get(name, 0))
    yield from (mem, hot, guar, cap, short, moves)
    numa = GaugeMetricFamily(
        "cxltierd_tenant_node_memory_bytes",
        "Anon + file memory of a tenant's cgroup on a NUMA node, from memory.numa_stat (the kernel's view).",
        labels=["tenant", "node"],
    )
    for name, per in sorted(s.tenant_numa.items()):
        for node, b in sorted(per.items()):
            numa.add_metric([name, str(node)], b)
    yield numa
