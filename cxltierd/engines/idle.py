"""The idle engine: a host with one memory tier has nothing to place. Report node memory, move nothing.

The daemon swaps in a real engine when re-discovery finds a second tier (a CXL region onlined, say).
"""

from __future__ import annotations

from cxltierd.discovery.live import node_memory
from cxltierd.hostfs import HostFS
from cxltierd.model import Gates, Outcome, Plan, Sample
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology


class IdleEngine:
    """Tracker and migrator for a single-tier host: samples node memory only, never moves a page."""

    name = "none"
    kernel_executed = False

    def __init__(self, fs: HostFS, nodes: list[int]) -> None:
        self.fs = fs
        self.nodes = nodes

    def gate(self, gates: Gates) -> None:
        """Only kernel-executed engines are gated."""

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Follow the topology's nodes."""
        self.nodes = list(topology.node_ids)

    def sample(self, now: float) -> Sample:
        """Node memory only: no regions."""
        mem = node_memory(self.fs, self.nodes)
        return Sample(regions=(), free_bytes=mem.free, available_bytes=mem.available, total_bytes=mem.total)

    def apply(self, plan: Plan, now: float) -> Outcome:
        """An empty outcome: nothing moves."""
        return Outcome()

    def stop(self) -> None:
        """Nothing to release."""
        pass
