"""The control socket's `status` reply: the daemon's Snapshot as a JSON document (the CLI prints it with
cxltierd.report.status)."""

from __future__ import annotations

from typing import Any

from cxltierd.report.cxl import memdev_json, region_json
from cxltierd.service.ras import ras_json
from cxltierd.service.state import Snapshot


def status_json(s: Snapshot) -> dict[str, Any]:
    """The daemon's live state, as the control socket's `status` reply carries it."""
    tiers = []
    usage = s.tier_usage()
    for t in s.topology.tiers:
        total, free = usage[t.name]
        tiers.append(
            {
                "tier": t.name,
                "rank": t.rank,
                "nodes": list(t.nodes),
                "total_bytes": total,
                "free_bytes": free,
                "hot_bytes": s.hot_bytes.get(t.name, 0),
            }
        )
    nodes = []
    for n in s.topology.nodes:
        total, free = s.node_usage(n.node)
        nodes.append({"node": n.node, "tier": n.kind, "reason": n.reason, "total_bytes": total, "free_bytes": free})
    r = s.last_reload
    return {
        "source": "daemon",
        "version": s.version,
        "started": s.started,
        "backend": s.backend,
        "engine": s.engine,
        "engine_reason": s.engine_reason,
        "kernel_features_used": list(s.engine_uses),
        "conflicts": list(s.conflicts),
        "policy": {"source": s.policy_source, "sha256": s.policy_digest, "interval": s.interval, "dry_run": s.dry_run},
        "last_reload": None if r is None else {"ok": r.ok, "time": r.time, "error": r.error, "source": r.source},
        "reloads": dict(s.reloads),
        "last_tick": s.last_tick,
        "ticks": s.ticks,
        "fast_tier_access_ratio": s.fast_tier_access_ratio,
        "heat": {"regions": s.regions, "region_bytes": s.region_bytes},
        "tiers": tiers,
        "nodes": nodes,
        "counters": {
            "migrated_bytes": {f"{a}->{b}": v for (a, b), v in sorted(s.migrated_bytes.items())},
            "migrated_pages": {f"{a}->{b}": v for (a, b), v in sorted(s.migrated_pages.items())},
            "failures": dict(sorted(s.failures.items())),
            "ping_pong": s.ping_pong,
            "topology_changes": s.topology_changes,
        },
        "cxl": {
            "memdevs": [memdev_json(m) for m in s.facts.memdevs] if s.facts else [],
            "regions": [region_json(g, s.facts.dax) for g in s.facts.regions] if s.facts else [],
        },
        "kernel_counters": dict(s.kernel_counters),
        "gates": None if s.gates is None else {"promote": s.gates.promote, "demote": s.gates.demote},
        "daemon": None
        if s.self_usage is None
        else {
            "cpu_seconds": s.self_usage.cpu_seconds,
            "rss_bytes": s.self_usage.rss_bytes,
            "threads": s.self_usage.threads,
            "open_fds": s.self_usage.open_fds,
        },
        "last_error": s.last_error,
        "ras": ras_json(s.ras),
        "tenants": tenants_json(s),
    }


def tenants_json(s: Snapshot) -> list[dict[str, Any]]:
    """One entry per tenant (policy order, `other` last); empty without tenants."""
    return [
        {
            "tenant": name,
            "class": u.klass,
            "weight": u.weight,
            "guarantee_bytes": u.guarantee,
            "cap_bytes": u.cap,
            "fast_bytes": u.fast_bytes,
            "shortfall_bytes": u.shortfall,
            "bytes": dict(u.bytes),
            "hot_bytes": dict(u.hot),
            "moves": s.tenant_moves.get(name, 0),
            "node_bytes": {str(n): b for n, b in sorted(s.tenant_numa.get(name, {}).items())},
        }
        for name, u in s.tenants.items()
    ]
