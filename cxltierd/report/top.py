"""`cxltierd top`: one screen of the daemon's live state from two status replies, as plain text lines.

Tiers with used, free and hot memory; bytes moved per second per tier pair since the previous reply; failures; the
engine, ticks and health (last error, kernel gates, CXL RAS health); the tenants table when the policy has tenants. Pure: the caller fetches the replies and draws the lines.
"""

from __future__ import annotations

import time
from typing import Any

from cxltierd.report.ras import ras_lines
from cxltierd.report.status import tenants_text
from cxltierd.units import human_bytes


def _rate(now: dict[str, int], before: dict[str, int] | None, seconds: float) -> dict[str, float]:
    """Per-second increase of each counter since `before` (0 without an earlier reply or time between them)."""
    if not before or seconds <= 0:
        return {k: 0.0 for k in now}
    return {k: max(v - before.get(k, 0), 0) / seconds for k, v in now.items()}


def top_lines(doc: dict[str, Any], before: dict[str, Any] | None, seconds: float, width: int = 100) -> list[str]:
    """The screen for status reply `doc`, with rates over the `seconds` since the reply `before` (or None)."""
    health = "error: " + str(doc["last_error"]) if doc.get("last_error") else "ok"
    clock = time.strftime("%H:%M:%S", time.localtime(doc["last_tick"])) if doc.get("last_tick") else "-"
    lines = [
        f"cxltierd top - {doc.get('backend')} backend, engine {doc.get('engine')}, health {health}",
        f"ticks {doc.get('ticks')}, last tick {clock}, policy {doc['policy']['source']} "
        f"(interval {doc['policy']['interval']:g}s{', dry run' if doc['policy'].get('dry_run') else ''})",
        "",
        f"{'TIER':<8} {'NODES':<10} {'TOTAL':>11} {'USED':>11} {'FREE':>11} {'HOT':>11}",
    ]
    for t in doc["tiers"]:
        total, free = t["total_bytes"], t["free_bytes"]
        used = None if total is None or free is None else total - free
        lines.append(
            f"{t['tier']:<8} {','.join(map(str, t['nodes'])):<10} {human_bytes(total):>11} {human_bytes(used):>11}"
            f" {human_bytes(free):>11} {human_bytes(t['hot_bytes']):>11}"
        )
    c = doc["counters"]
    prev = before["counters"] if before else None
    rates = _rate(c["migrated_bytes"], prev["migrated_bytes"] if prev else None, seconds)
    lines += ["", f"{'MOVES':<14} {'PER SECOND':>12} {'TOTAL':>11}"]
    for pair, total in c["migrated_bytes"].items():
        lines.append(f"{pair:<14} {human_bytes(int(rates[pair])) + '/s':>12} {human_bytes(total):>11}")
    if not c["migrated_bytes"]:
        lines.append("(nothing moved yet)")
    failures = ", ".join(f"{k} {v}" for k, v in c["failures"].items() if v) or "none"
    lines += ["", f"failures (pages): {failures}; ping-pong {c['ping_pong']}"]
    g = doc.get("gates")
    if g is not None:
        lines.append(
            f"kernel gates: promotion {'on' if g['promote'] else 'off'}, demotion {'on' if g['demote'] else 'off'}"
        )
    for section in (ras_lines(doc.get("ras")), tenants_text(doc.get("tenants") or [])):
        lines += ["", *section] if section else []
    lines += ["", "q quits"]
    return [line[:width] for line in lines]
