"""The host as `cxltierd topology` and a daemon-less `cxltierd status` show it: nodes, tiers, CXL, kernel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from cxltierd.facts import HostFacts
from cxltierd.report.cxl import cxl_text, dax_json, decoder_json, memdev_json, region_json
from cxltierd.topology import Topology
from cxltierd.units import cpulist, human_bytes


def topology_json(facts: HostFacts, topo: Topology) -> dict[str, Any]:
    """The `cxltierd topology --json` document: nodes, tiers, cxl{memdevs,regions,decoders}, dax, kernel."""
    k = facts.kernel
    blocks_by_node: dict[int, int] = {}
    for b in facts.blocks:
        if b.node is not None:
            blocks_by_node[b.node] = blocks_by_node.get(b.node, 0) + 1
    nodes = []
    for n in topo.nodes:
        nodes.append(
            {
                "node": n.node,
                "tier": n.kind,
                "reason": n.reason,
                "cpus": list(n.cpus),
                "total_bytes": n.total_bytes,
                "free_bytes": n.free_bytes,
                "distances": {str(o): d for o, d in sorted(n.distances.items())},
                "hmat": None if n.hmat is None else asdict(n.hmat),
                "kernel_tier": n.kernel_tier,
                "region": n.region,
                "memory_blocks": blocks_by_node.get(n.node, 0),
            }
        )
    tiers = [
        {
            "tier": t.name,
            "rank": t.rank,
            "nodes": list(t.nodes),
            "total_bytes": sum(topo.node(x).total_bytes for x in t.nodes),
            "free_bytes": sum(topo.node(x).free_bytes for x in t.nodes),
        }
        for t in topo.tiers
    ]
    return {
        "nodes": nodes,
        "tiers": tiers,
        "cxl": {
            "memdevs": [memdev_json(m) for m in facts.memdevs],
            "regions": [region_json(g, facts.dax) for g in facts.regions],
            "decoders": [decoder_json(d) for d in facts.decoders],
        },
        "dax": [dax_json(d) for d in facts.dax],
        "kernel": {
            "release": k.release,
            "numa_balancing": k.numa_balancing,
            "numa_balancing_promote_rate_limit_MBps": k.promote_rate_limit_mbps,
            "demotion_enabled": k.demotion_enabled,
            "damon": {"sysfs": k.damon.sysfs, "nr_kdamonds": k.damon.nr_kdamonds, "running": list(k.damon.running)},
            "cxl_bus": k.cxl_bus,
            "block_size_bytes": k.block_size_bytes,
            "auto_online_blocks": k.auto_online_blocks,
            "memory_tiers": {f"memory_tier{t}": list(ns) for t, ns in sorted(k.memory_tiers.items())},
            "memory_tiers_consistent": not topo.warnings,
            "memory_tier_warnings": list(topo.warnings),
            "gpus": [{"bdf": g.bdf, "node": g.node, "status": g.status} for g in facts.gpus],
            "vmstat": dict(k.vmstat),
        },
    }


def topology_text(facts: HostFacts, topo: Topology) -> str:
    """What `cxltierd topology` prints: tiers fast to slow, each node with its kind and why, CXL objects, warnings."""
    lines = ["Tiers (fast to slow):"]
    for t in topo.tiers:
        total = sum(topo.node(x).total_bytes for x in t.nodes)
        free = sum(topo.node(x).free_bytes for x in t.nodes)
        lines.append(
            f"  {t.rank} {t.name:<8} nodes {','.join(map(str, t.nodes)):<8} "
            f"{human_bytes(total):>11} total {human_bytes(free):>11} free"
        )
    lines.append("Nodes:")
    for n in topo.nodes:
        cpus = cpulist(n.cpus) or "-"
        hmat = ""
        if n.hmat:
            hmat = f" hmat {n.hmat.read_latency_ns} ns {n.hmat.read_bandwidth_mbps} MB/s"
        dist = " ".join(f"{o}:{d}" for o, d in sorted(n.distances.items()))
        lines.append(
            f"  node{n.node:<3} {n.kind:<8} cpus {cpus:<9} {human_bytes(n.total_bytes):>11}"
            f" ({human_bytes(n.free_bytes)} free) dist [{dist}]{hmat}"
        )
        lines.append(f"           {n.reason}")
    lines.extend(cxl_text(facts))
    for w in topo.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def status_text(facts: HostFacts, topo: Topology) -> str:
    """What `cxltierd status` prints without a daemon: each tier's size and free memory, and the CXL objects."""
    lines = ["Tiers:"]
    for t in topo.tiers:
        total = sum(topo.node(x).total_bytes for x in t.nodes)
        free = sum(topo.node(x).free_bytes for x in t.nodes)
        pct = 100.0 * free / total if total else 0.0
        lines.append(
            f"  {t.name:<8} nodes {','.join(map(str, t.nodes)):<8} {human_bytes(total):>11}, "
            f"{human_bytes(free)} free ({pct:.0f}%)"
        )
    lines.extend(cxl_text(facts))
    if not facts.memdevs and not facts.regions:
        lines.append("No CXL devices.")
    return "\n".join(lines)
