"""The running daemon's state as `cxltierd status` prints it, from the control socket's status document."""

from __future__ import annotations

import time
from typing import Any

from cxltierd.report.ras import ras_lines
from cxltierd.units import human_bytes


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
    if doc.get("kernel_features_used"):
        lines.append("Kernel features used: " + ", ".join(doc["kernel_features_used"]))
    for c in doc.get("conflicts", []):
        lines.append(f"Conflict: {c}")
    ratio = doc.get("fast_tier_access_ratio")
    ticks = f"Ticks: {doc['ticks']}"
    if doc.get("last_tick"):
        ticks += f", last {max(0.0, time.time() - doc['last_tick']):.1f} s ago"
    if ratio is not None:
        ticks += f", fast-tier access share {100 * ratio:.1f}%"
    heat = doc.get("heat")
    if heat and heat["regions"]:
        ticks += f"; heat in {heat['regions']} regions of up to {human_bytes(heat['region_bytes'])}"
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
    g = doc.get("gates")
    if g is not None:
        lines.append(
            f"Kernel gates: promotion {'on' if g['promote'] else 'off'}, demotion {'on' if g['demote'] else 'off'}"
        )
    u = doc.get("daemon")
    if u is not None:
        lines.append(
            f"Daemon: {u['cpu_seconds']:.1f} s CPU, {human_bytes(u['rss_bytes'])} resident, {u['threads']} threads"
        )
    lines += ras_lines(doc.get("ras"))
    if doc.get("last_error"):
        lines.append(f"Last error: {doc['last_error']}")
    lines += tenants_text(doc.get("tenants") or [])
    return "\n".join(lines)


def tenants_text(rows: list[dict[str, Any]]) -> list[str]:
    """The tenants table of `cxltierd status` (nothing without tenants): fast bytes against guarantee and cap, hot
    bytes, moves, and the kernel's per-node figures (memory.numa_stat) where the tenant has a cgroup."""
    if not rows:
        return []
    out = ["Tenants:", f"  {'tenant':<14} {'class':<8} {'weight':>6} {'fast':>10} {'guarantee':>10} {'cap':>10} "
           f"{'short':>10} {'hot':>10} {'moves':>6}  kernel (numa_stat)"]  # fmt: skip
    for r in rows:
        kernel = ", ".join(f"N{n} {human_bytes(b)}" for n, b in r.get("node_bytes", {}).items()) or "-"
        out.append(
            f"  {r['tenant']:<14} {r['class']:<8} {r['weight']:>6g} {human_bytes(r['fast_bytes']):>10} "
            f"{human_bytes(r['guarantee_bytes']):>10} {human_bytes(r['cap_bytes']):>10} "
            f"{human_bytes(r['shortfall_bytes']):>10} {human_bytes(sum(r['hot_bytes'].values())):>10} "
            f"{r['moves']:>6}  {kernel}"
        )
    return out
