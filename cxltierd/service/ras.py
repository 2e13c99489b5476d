"""RAS in the daemon's outputs: the Prometheus families and the `status` JSON section, from the snapshot's RasView.

Labels are bounded: memdev (the host's CXL memdevs), node, event (the cxl event names the kernels define, else
"other"), severity (the device log: Informational, Warning, Failure, Fatal, "none" or "other") and state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cxltierd.failover import RasView
from cxltierd.ras.policy import LEVELS
from cxltierd.service.state import Snapshot

FIGURES = ("life_used", "device_temp", "dirty_shutdown_cnt", "cor_vol_err_cnt", "cor_per_err_cnt")


def ras_metrics(s: Snapshot) -> Iterator[Metric]:
    """cxltierd_ras_* families (none when the snapshot has no RAS state)."""
    r = s.ras
    if r is None:
        return
    yield GaugeMetricFamily(
        "cxltierd_ras_enabled", "1 when CXL trace events are read.", value=int(r.enabled and not r.problem)
    )
    ev = CounterMetricFamily(
        "cxltierd_ras_events",
        "CXL RAS trace events, by memdev, event and severity.",
        labels=["memdev", "event", "severity"],
    )
    for (memdev, name, severity), n in sorted(r.events.items()):
        ev.add_metric([memdev, name, severity], n)
    yield ev
    poison = GaugeMetricFamily("cxltierd_ras_poison_records", "Poisoned DPAs listed, by memdev.", labels=["memdev"])
    mstate = GaugeMetricFamily(
        "cxltierd_ras_memdev_state", "Health of a memdev (1 for its current state).", labels=["memdev", "state"]
    )
    for name, h in sorted(r.memdevs.items()):
        poison.add_metric([name], len(h.poison))
        for level in LEVELS:
            mstate.add_metric([name, level], int(h.state == level))
    yield poison
    yield mstate
    nstate = GaugeMetricFamily(
        "cxltierd_ras_node_state",
        "Health of a NUMA node backed by CXL memdevs (1 for its state).",
        labels=["node", "state"],
    )
    for node, state in sorted(r.nodes.items()):
        for level in LEVELS:
            nstate.add_metric([str(node), level], int(state == level))
    yield nstate
    moved = CounterMetricFamily("cxltierd_ras_drain_moved_bytes", "Bytes drained off a failing node.", labels=["node"])
    left = GaugeMetricFamily(
        "cxltierd_ras_drain_remaining_bytes", "Bytes still on a node being drained.", labels=["node"]
    )
    done = GaugeMetricFamily("cxltierd_ras_drain_done", "1 when a node's drain is done.", labels=["node"])
    stalled = GaugeMetricFamily("cxltierd_ras_drain_stalled", "1 when a drain found no room.", labels=["node"])
    for node, p in sorted(r.drains.items()):
        moved.add_metric([str(node)], p.moved)
        if p.remaining is not None:
            left.add_metric([str(node)], p.remaining)
        done.add_metric([str(node)], int(p.status == "done"))
        stalled.add_metric([str(node)], int(p.status == "stalled"))
    yield from (moved, left, done, stalled)
    fig = GaugeMetricFamily(
        "cxltierd_ras_memdev_health", "The memdev's last reported health figures.", labels=["memdev", "figure"]
    )
    for name, figures in sorted(r.figures.items()):
        for k in FIGURES:
            if k in figures:
                fig.add_metric([name, k], figures[k])
    yield fig
    mailbox = GaugeMetricFamily(
        "cxltierd_ras_mailbox_health_read",
        "1 when the memdev's Get Health Info was read through the CXL mailbox, 0 when it is refused.",
        labels=["memdev"],
    )
    for name, why in sorted(r.mailbox.items()):
        mailbox.add_metric([name], int(why == "ok"))
    yield mailbox
    yield CounterMetricFamily(
        "cxltierd_ras_soft_offlined_pages", "Poisoned pages soft-offlined.", value=r.soft_offlined
    )
    yield CounterMetricFamily(
        "cxltierd_ras_parse_errors", "cxl trace lines that could not be read.", value=r.parse_errors
    )


def ras_json(r: RasView | None) -> dict[str, Any] | None:
    """The `status` document's health section."""
    if r is None:
        return None
    return {
        "enabled": r.enabled,
        "source": r.source,
        "problem": r.problem,
        "memdevs": {
            name: {
                "state": h.state,
                "cause": h.cause,
                "poison_records": len(h.poison),
                "health": r.figures.get(name, {}),
            }
            for name, h in sorted(r.memdevs.items())
        },
        "nodes": {str(n): s for n, s in sorted(r.nodes.items())},
        "avoided_nodes": list(r.avoid),
        "drains": {str(n): p.to_dict() for n, p in sorted(r.drains.items())},
        "offlined_nodes": list(r.offlined),
        "events": [
            {"memdev": m, "event": e, "severity": sev, "count": n} for (m, e, sev), n in sorted(r.events.items())
        ],
        "mailbox": dict(sorted(r.mailbox.items())),
        "soft_offlined_pages": r.soft_offlined,
        "parse_errors": r.parse_errors,
        "transitions": list(r.transitions),
    }
