"""Which nodes play which part, and which processes the policy selects: pure functions of topology and policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cxltierd.model import Process
from cxltierd.policy.schema import Policy, Selector
from cxltierd.topology import Topology


@dataclass(frozen=True)
class Roles:
    """Which live nodes are fast (promotion targets) and slow (demotion targets, fastest first)."""

    fast: tuple[int, ...]
    slow: tuple[int, ...]
    kind: Mapping[int, str]


def _speed(topology: Topology, node: int) -> tuple[int, float]:
    """Sort key of a node within its tier: HMAT latency over bandwidth (lower first), nodes without it last."""
    hmat = topology.node(node).hmat
    cost = hmat.cost if hmat is not None else None
    return (0, cost) if cost is not None else (1, 0.0)


def roles(topology: Topology, policy: Policy, live: set[int] | None = None) -> Roles:
    """Fast and slow nodes from the policy's tier lists (default: the fastest tier is fast, the rest slow), tier by
    tier, and within a tier the faster node first (two CXL expanders, one behind a switch: the direct one first)."""
    kind = {n.node: n.kind for n in topology.nodes}
    ordered = [
        n
        for t in topology.tiers
        for n in sorted(t.nodes, key=lambda x: _speed(topology, x))
        if live is None or n in live
    ]

    def pick(refs: tuple[str | int, ...]) -> list[int]:
        return [n for n in ordered if n in refs or kind[n] in refs]

    if policy.tiers.fast:
        fast = pick(policy.tiers.fast)
    else:
        first = next((t for t in topology.tiers if live is None or set(t.nodes) & live), None)
        fast = [n for n in ordered if first is not None and n in first.nodes]
    slow = pick(policy.tiers.slow) if policy.tiers.slow else [n for n in ordered if n not in fast]
    return Roles(fast=tuple(fast), slow=tuple(n for n in slow if n not in fast), kind=kind)


def _matches(selectors: tuple[Selector, ...], p: Process) -> bool:
    return any(s.matches(p.pid, p.name, p.cmdline, p.cgroup) for s in selectors)


def is_managed(policy: Policy, p: Process) -> bool:
    """Matched by processes.manage (or manage is empty) and not by processes.exclude."""
    pol = policy.processes
    return (not pol.manage or _matches(pol.manage, p)) and not _matches(pol.exclude, p)


def pinned_tier(policy: Policy, p: Process) -> str | None:
    """The tier the first matching processes.pin entry pins the process to, or None."""
    return next((x.tier for x in policy.processes.pin if x.match.matches(p.pid, p.name, p.cmdline, p.cgroup)), None)


def fast_capacity(topology: Topology, policy: Policy) -> int:
    """Bytes of the fast nodes together: what a tenant's percentages are of."""
    return sum(topology.node(n).total_bytes for n in roles(topology, policy).fast)
