"""NUMA nodes' health: a node backed by several memdevs (an interleaved region) takes the worst of their states."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cxltierd.ras.health import HEALTHY, MemdevHealth, worse


@dataclass(frozen=True)
class NodeHealth:
    """A NUMA node's state: the worst of its memdevs, and which memdevs are in that state."""

    node: int
    state: str
    memdevs: tuple[str, ...]


def node_states(memdevs: Mapping[str, MemdevHealth], nodes_of: Mapping[str, Iterable[int]]) -> dict[int, NodeHealth]:
    """Each node backed by a memdev in `nodes_of` (memdev -> its nodes), in the worst state of its memdevs."""
    by_node: dict[int, list[MemdevHealth]] = {}
    for name, nodes in nodes_of.items():
        for node in nodes:
            by_node.setdefault(node, []).append(memdevs.get(name) or MemdevHealth(name))
    out = {}
    for node, group in sorted(by_node.items()):
        state = HEALTHY
        for h in group:
            state = worse(state, h.state)
        out[node] = NodeHealth(node, state, tuple(sorted(h.memdev for h in group if h.state == state)))
    return out
