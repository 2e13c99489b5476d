"""The health section of `cxltierd status` text, from the status document's `ras` section."""

from __future__ import annotations

from typing import Any

from cxltierd.discovery.tracefs import RasProbe
from cxltierd.report.doctor import Check
from cxltierd.units import human_bytes


def ras_lines(doc: dict[str, Any] | None) -> list[str]:
    """Lines saying where CXL errors come from, each memdev's and node's health, and the drains."""
    if doc is None:
        return []
    if not doc["enabled"]:
        return ["Health (RAS): off (policy ras.enabled: false)"]
    if doc["problem"]:
        lines = [f"Health (RAS): CXL errors NOT READ: {doc['problem']}"]
    else:
        lines = [f"Health (RAS): cxl trace events from {doc['source'] or 'nowhere yet (starting)'}"]
    for name, m in doc["memdevs"].items():
        extra = f", {m['poison_records']} poison records" if m["poison_records"] else ""
        lines.append(f"  {name}: {m['state']}{extra}" + (f" ({m['cause']})" if m["cause"] else ""))
    read = [m for m, why in doc.get("mailbox", {}).items() if why == "ok"]
    if read:
        lines.append(f"  device health through the mailbox (Get Health Info): {', '.join(read)}")
    for why in doc.get("mailbox", {}).values():
        if why != "ok":
            lines.append(f"  device health NOT read through the mailbox: {why}")
    for node, state in doc["nodes"].items():
        lines.append(
            f"  node {node}: {state}" + (" (no placement into it)" if int(node) in doc["avoided_nodes"] else "")
        )
    for node, d in doc["drains"].items():
        left = "?" if d["remaining"] is None else human_bytes(d["remaining"])
        lines.append(f"  drain of node {node}: {d['status']}, {human_bytes(d['moved'])} moved, {left} left")
    events = sum(e["count"] for e in doc["events"])
    if events:
        lines.append(f"  events: {events} ({', '.join(sorted({e['event'] for e in doc['events']}))})")
    return lines


def ras_checks(p: RasProbe) -> list[Check]:
    """`doctor`'s RAS findings: can cxltierd read CXL errors here, and from what."""
    if not p.memdevs:
        return [Check("ras", "ok", "no CXL memdevs: no CXL errors to watch")]
    if p.tracing is None:
        return [
            Check(
                "ras",
                "warn",
                "tracefs is not mounted: CXL memory errors cannot be read",
                "mount -t tracefs nodev /sys/kernel/tracing (systemd mounts it at boot)",
            )
        ]
    if not p.events:
        return [Check("ras", "warn", "the kernel defines no cxl trace events", "a kernel with CONFIG_CXL_BUS (>= 6.5)")]
    poison = ", ".join(p.poison_lists) or "none (no memdev supports trigger_poison_list)"
    running = "; cxltierd's instance exists (a daemon runs, or one stopped uncleanly: taken over at start)"
    return [
        Check(
            "ras",
            "ok",
            f"{len(p.events)} cxl trace events in {p.tracing} ({', '.join(p.events)}); poison lists: {poison}"
            + (running if p.instance else ""),
        ),
        *mailbox_checks(p),
    ]


def mailbox_checks(p: RasProbe) -> list[Check]:
    """Whether each memdev's Get Health Info can be read through its char device, with what it says."""
    read = [f"{m}: {text}" for m, ok, text in p.mailbox if ok]
    refused = [text for _, ok, text in p.mailbox if not ok]
    out = []
    if read:
        out.append(Check("ras-health", "ok", "device health through the mailbox (Get Health Info): " + "; ".join(read)))
    if refused:
        out.append(
            Check(
                "ras-health",
                "warn",
                "device health NOT read through the mailbox (health comes from cxl_memory_module events only): "
                + "; ".join(refused),
            )
        )
    return out
