"""Turn facts and topology into `topology --json` dicts and short human text. Pure functions."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from cxltierd.facts import Access, DaxDevice, Decoder, HostFacts, Memdev, Region
from cxltierd.state import Snapshot
from cxltierd.topology import Topology

if TYPE_CHECKING:
    from cxltierd.emulate.simulate import RunResult


def _access(a: Access | None) -> dict[str, Any] | None:
    return None if a is None else asdict(a) | {"initiators": list(a.initiators)}


def memdev_json(m: Memdev) -> dict[str, Any]:
    return {
        "memdev": m.memdev,
        "ram_size": m.ram_size,
        "pmem_size": m.pmem_size,
        "serial": m.serial,
        "numa_node": m.numa_node,
        "host": m.host,
        "firmware_version": m.firmware_version,
        "ram_qos_class": m.ram_qos_class,
        "security_state": m.security_state,
        "enabled": m.enabled,
    }


def dax_json(d: DaxDevice) -> dict[str, Any]:
    return {
        "chardev": d.chardev,
        "size": d.size,
        "target_node": d.target_node,
        "align": d.align,
        "mode": d.mode,
        "online_memblocks": d.online_memblocks,
        "total_memblocks": d.total_memblocks,
        "movable": d.movable,
        "region": d.region,
        "resource": d.resource,
        "kind": d.kind,
    }


def region_json(g: Region, dax: tuple[DaxDevice, ...]) -> dict[str, Any]:
    devices = [d for d in dax if d.region == g.region]
    return {
        "region": g.region,
        "resource": g.resource,
        "size": g.size,
        "type": g.mode,
        "interleave_ways": g.interleave_ways,
        "interleave_granularity": g.interleave_granularity,
        "decode_state": g.decode_state,
        "enabled": g.enabled,
        "mappings": [{"position": m.position, "memdev": m.memdev, "decoder": m.decoder} for m in g.mappings],
        "daxregion": None
        if g.dax_region is None
        else {
            "id": int(g.dax_region.removeprefix("dax_region")),
            "devices": [dax_json(d) for d in devices],
        },
        "target_node": next((d.target_node for d in devices if d.target_node is not None), None),
        "access0": _access(g.access0),
        "access1": _access(g.access1),
    }


def decoder_json(d: Decoder) -> dict[str, Any]:
    return {
        "decoder": d.decoder,
        "kind": d.kind,
        "port": d.port,
        "resource": d.start,
        "size": d.size,
        "interleave_ways": d.interleave_ways,
        "interleave_granularity": d.interleave_granularity,
        "target_list": list(d.target_list),
        "mode": d.mode,
        "dpa_resource": d.dpa_resource,
        "dpa_size": d.dpa_size,
        "region": d.region,
        "locked": d.locked,
        "capabilities": list(d.capabilities),
        "memdev": d.memdev,
    }


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


def cpulist(values: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 8) -> "0-3,8", the kernel's cpulist format."""
    out: list[str] = []
    for v in sorted(values):
        if out and v == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def topology_text(facts: HostFacts, topo: Topology) -> str:
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


def cxl_text(facts: HostFacts) -> list[str]:
    lines = []
    if facts.memdevs:
        lines.append("CXL memdevs:")
        for m in facts.memdevs:
            lines.append(
                f"  {m.memdev:<6} ram {human_bytes(m.ram_size)} pmem {human_bytes(m.pmem_size)} host {m.host}"
                f" serial {m.serial} fw {m.firmware_version!r} {'enabled' if m.enabled else 'disabled'}"
            )
    if facts.regions:
        lines.append("CXL regions:")
        for g in facts.regions:
            devs = [d for d in facts.dax if d.region == g.region]
            where = ", ".join(f"{d.chardev} {d.mode or 'unbound'} -> node {d.target_node}" for d in devs) or "no dax"
            memdevs = ",".join(m.memdev or m.decoder for m in g.mappings)
            lines.append(
                f"  {g.region:<8} {g.mode or '?'} {human_bytes(g.size)} {g.interleave_ways}-way [{memdevs}]"
                f" {g.decode_state or '?'} {'enabled' if g.enabled else 'disabled'}; {where}"
            )
    others = [d for d in facts.dax if d.region is None]
    if others:
        lines.append("Other dax devices:")
        for d in others:
            lines.append(f"  {d.chardev} {d.kind} {human_bytes(d.size)} {d.mode or 'unbound'} node {d.target_node}")
    return lines


def status_text(facts: HostFacts, topo: Topology) -> str:
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
        "conflicts": list(s.conflicts),
        "policy": {"source": s.policy_source, "sha256": s.policy_digest, "interval": s.interval, "dry_run": s.dry_run},
        "last_reload": None if r is None else {"ok": r.ok, "time": r.time, "error": r.error, "source": r.source},
        "reloads": dict(s.reloads),
        "last_tick": s.last_tick,
        "ticks": s.ticks,
        "fast_tier_access_ratio": s.fast_tier_access_ratio,
        "tiers": tiers,
        "nodes": nodes,
        "counters": {
            "migrated_bytes": {f"{a}->{b}": v for (a, b), v in sorted(s.migrated_bytes.items())},
            "migrated_pages": {f"{a}->{b}": v for (a, b), v in sorted(s.migrated_pages.items())},
            "failures": dict(sorted(s.failures.items())),
            "ping_pong": s.ping_pong,
            "topology_changes": s.topology_changes,
        },
        "cxl": {"memdevs": list(s.memdevs), "regions": list(s.regions)},
        "kernel_counters": dict(s.kernel_counters),
        "last_error": s.last_error,
    }


def live_status_text(doc: dict[str, Any]) -> str:
    """`cxltierd status` text from a status_json() document."""
    pol = doc["policy"]
    lines = [
        f"cxltierd {doc['version']}: {doc['engine']} engine on the {doc['backend']} host ({doc['engine_reason']})",
        f"Policy: {pol['source']} (sha256 {pol['sha256'] or '-'}), interval {pol['interval']:g}s"
        + (", DRY RUN" if pol["dry_run"] else ""),
    ]
    r = doc.get("last_reload")
    if r is not None:
        lines.append("Last reload: " + ("ok" if r["ok"] else f"FAILED, old policy in force: {r['error']}"))
    for c in doc.get("conflicts", []):
        lines.append(f"Conflict: {c}")
    ratio = doc.get("fast_tier_access_ratio")
    ticks = f"Ticks: {doc['ticks']}"
    if doc.get("last_tick"):
        ticks += f", last {max(0.0, time.time() - doc['last_tick']):.1f} s ago"
    if ratio is not None:
        ticks += f", fast-tier access share {100 * ratio:.1f}%"
    lines.append(ticks)
    lines.append("Tiers:")
    for t in doc["tiers"]:
        total, free = t["total_bytes"], t["free_bytes"]
        pct = 100.0 * free / total if total else 0.0
        lines.append(
            f"  {t['tier']:<8} nodes {','.join(map(str, t['nodes'])):<8} {human_bytes(total):>11}, "
            f"{human_bytes(free)} free ({pct:.0f}%), {human_bytes(t['hot_bytes'])} hot"
        )
    c = doc["counters"]
    moved = ", ".join(f"{k} {human_bytes(v)}" for k, v in c["migrated_bytes"].items()) or "nothing"
    lines.append(f"Moved: {moved}; ping-pong {c['ping_pong']}; topology changes {c['topology_changes']}")
    if c["failures"]:
        lines.append("Failures (pages): " + ", ".join(f"{k} {v}" for k, v in c["failures"].items()))
    for g in doc["cxl"]["regions"]:
        lines.append(f"CXL {g['region']}: {g.get('type')} {human_bytes(g.get('size'))} -> node {g.get('target_node')}")
    if doc.get("last_error"):
        lines.append(f"Last error: {doc['last_error']}")
    return "\n".join(lines)


def sim_json(r: RunResult) -> dict[str, Any]:
    return {
        "placer": r.placer,
        "fast_tier_access_share": r.share,
        "promoted_bytes": r.promoted_bytes,
        "demoted_bytes": r.demoted_bytes,
        "ping_pong": r.ping_pong,
        "failed_pages": r.failed_pages,
        "ticks": r.ticks,
        "series": [{"time": t, "share": s} for t, s in r.series],
    }


def sim_table(scenario: str, results: list[RunResult], buckets: int = 6) -> str:
    """Fast-tier share over time (in `buckets` spans of the run) and overall, migration and ping-pong per placer."""
    end = max((r.series[-1][0] for r in results if r.series), default=0.0)
    edges = [end * i / buckets for i in range(buckets + 1)]
    head = " ".join(f"{f'<{e:.0f}s':>6}" for e in edges[1:])
    lines = [
        f"scenario {scenario}: share of accesses served by the fastest tier",
        f"{'placer':<18} {head}  {'overall':>7}  {'promoted':>9} {'demoted':>9} {'ping-pong':>9}",
    ]
    for r in results:
        spans = [r.share_between(edges[i], edges[i + 1]) for i in range(buckets)]
        cells = " ".join(f"{'-' if s is None else f'{100 * s:.1f}%':>6}" for s in spans)
        lines.append(
            f"{r.placer:<18} {cells}  {100 * r.share:>6.1f}%  {human_bytes(r.promoted_bytes):>9}"
            f" {human_bytes(r.demoted_bytes):>9} {r.ping_pong:>9}"
        )
    return "\n".join(lines)
