"""`cxltierd simulate` output: a run as JSON, several runs as a table of fast-tier share over time."""

from __future__ import annotations

from typing import Any

from cxltierd.emulate.simulate import RunResult
from cxltierd.units import human_bytes


def sim_json(r: RunResult) -> dict[str, Any]:
    """One simulated run as JSON: placer, fast-tier access share, bytes moved, ping-pong, failures, time series."""
    return {
        "placer": r.placer,
        "fast_tier_access_share": r.share,
        "mean_latency_ns": r.mean_latency_ns,
        "promoted_bytes": r.promoted_bytes,
        "demoted_bytes": r.demoted_bytes,
        "ping_pong": r.ping_pong,
        "failed_pages": r.failed_pages,
        "ticks": r.ticks,
        "series": [{"time": t, "share": s} for t, s in r.series],
        **({"ras": ras_json(r)} if r.ras is not None else {}),
    }


def ras_json(r: RunResult) -> dict[str, Any]:
    """What RAS did in the run: transitions, final node states, drains, bytes placed into an avoided node."""
    assert r.ras is not None
    return {
        "transitions": r.ras.transitions,
        "nodes": {str(n): s for n, s in sorted(r.ras.nodes.items())},
        "drains": {
            str(n): {"status": st, "moved": moved, "remaining": left} for n, (st, moved, left) in r.ras.drains.items()
        },
        "placed_into_avoided_bytes": r.ras.into_avoided,
    }


def ras_text(r: RunResult) -> list[str]:
    """The RAS lines under the table: each transition, each drain, what placement put into an avoided node."""
    if r.ras is None:
        return []
    lines = [f"RAS ({r.placer}):"] + [f"  {t}" for t in r.ras.transitions]
    for n, (status, moved, left) in sorted(r.ras.drains.items()):
        rest = "?" if left is None else human_bytes(left)
        lines.append(f"  drain of node {n}: {status}, {human_bytes(moved)} moved, {rest} left")
    avoided = ", ".join(f"{n} {s}" for n, s in sorted(r.ras.nodes.items()) if s != "healthy") or "none"
    lines.append(f"  nodes kept off placement: {avoided}; placed into them: {human_bytes(r.ras.into_avoided)}")
    return lines


def sim_table(scenario: str, results: list[RunResult], buckets: int = 6) -> str:
    """Fast-tier share over time (in `buckets` spans of the run) and overall, the access-weighted mean loaded latency
    (cxltierd.policy.perf's model), migration and ping-pong per placer."""
    end = max((r.series[-1][0] for r in results if r.series), default=0.0)
    edges = [end * i / buckets for i in range(buckets + 1)]
    head = " ".join(f"{f'<{e:.0f}s':>6}" for e in edges[1:])
    lines = [
        f"scenario {scenario}: share of accesses served by the fastest tier",
        f"{'placer':<18} {head}  {'overall':>7}  {'latency':>8}  {'promoted':>9} {'demoted':>9} {'ping-pong':>9}",
    ]
    for r in results:
        spans = [r.share_between(edges[i], edges[i + 1]) for i in range(buckets)]
        cells = " ".join(f"{'-' if s is None else f'{100 * s:.1f}%':>6}" for s in spans)
        lines.append(
            f"{r.placer:<18} {cells}  {100 * r.share:>6.1f}%  {r.mean_latency_ns:>5.0f} ns  {human_bytes(r.promoted_bytes):>9}"
            f" {human_bytes(r.demoted_bytes):>9} {r.ping_pong:>9}"
        )
    for r in results:
        lines += ras_text(r)
    return "\n".join(lines)
