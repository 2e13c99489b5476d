"""Nodes placement must stay off (RAS: a degraded or failing CXL node): planned moves into them are dropped, and a
kernel-executed engine stops demoting while one of its demotion targets is avoided. Pure."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import replace

from cxltierd.model import Gates, Plan


def keep_off(plan: Plan, avoid: Set[int]) -> Plan:
    """The plan without its moves into avoided nodes, with a note saying how many were dropped."""
    kept = tuple(m for m in plan.moves if m.dst not in avoid)
    dropped = len(plan.moves) - len(kept)
    if not dropped:
        return plan
    nodes = ", ".join(map(str, sorted(avoid)))
    return Plan(moves=kept, notes=(*plan.notes, f"{dropped} moves into unhealthy node(s) {nodes} dropped"))


def gate_off(gates: Gates, slow: tuple[int, ...], fast: tuple[int, ...], avoid: Set[int]) -> Gates:
    """The gates with demotion off when a slow node is avoided, and promotion off when a fast node is."""
    if set(slow) & set(avoid):
        gates = replace(gates, demote=False)
    if set(fast) & set(avoid):
        gates = replace(gates, promote=False)
    return gates
