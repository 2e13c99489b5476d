"""The engine contract: what the placement loop calls on whatever samples heat and moves memory.

The loop calls `tracker.sample(now)` for the heat of memory regions and the free memory of each node. For an
engine the daemon executes (move_pages, the simulator) it builds a Plan with the pure decision function
(cxltierd.policy.decide) and hands it to `migrator.apply(plan, now)`, which returns an Outcome. For a
kernel-executed engine (DAMOS, NUMA-balancing tiering) it computes the gates with the pure
cxltierd.policy.gates.kernel_gates, hands them to `migrator.gate(gates)`, and `apply()` with an empty plan reports
what the kernel moved since the last call. `configure()` turns topology and policy into settings and writes nothing
when policy.dry_run is set. The value types live in cxltierd.model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cxltierd.model import Gates, Outcome, Plan, Sample
from cxltierd.policy.schema import Policy
from cxltierd.topology import Topology


class Tracker(Protocol):
    """Samples the heat of managed memory and the memory of every node."""

    name: str

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Take the topology and policy in force; called at start and after every reload or topology change."""
        ...

    def sample(self, now: float) -> Sample:
        """The heat of managed regions and every node's (free, total) bytes at `now`."""
        ...

    def stop(self) -> None:
        """Release what sampling holds (kernel monitors, descriptors); the tracker is not used afterwards."""
        ...


class Migrator(Protocol):
    """Moves memory between nodes, or reports what the kernel moved (`kernel_executed`)."""

    name: str
    kernel_executed: bool  # True: the kernel moves memory under gate(); apply() gets empty plans and reports

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Take the topology and policy in force; writes no kernel setting when policy.dry_run is set."""
        ...

    def gate(self, gates: Gates) -> None:
        """Switch the kernel's promotion/demotion on or off (kernel-executed engines; others ignore it)."""

    def apply(self, plan: Plan, now: float) -> Outcome:
        """Execute the plan (or, when kernel-executed, report what the kernel moved since the last call)."""
        ...

    def stop(self) -> None:
        """Undo what configure() set in the kernel; the migrator is not used afterwards."""
        ...


@dataclass(frozen=True)
class Engines:
    """The engine the loop drives: its tracker and migrator (often one object), and why it was chosen."""

    name: str
    tracker: Tracker
    migrator: Migrator
    reason: str = ""
    conflicts: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()  # the kernel features it drives ("migrate_hot", "filter:young", "numa_balancing=2")

    def configure(self, topology: Topology, policy: Policy) -> None:
        """Program both parts (the migrator first, as kernel engines that are also trackers expect)."""
        self.migrator.configure(topology, policy)
        if self.tracker is not self.migrator:
            self.tracker.configure(topology, policy)

    def stop(self) -> None:
        """Stop both parts (once when they are one object)."""
        self.tracker.stop()
        if self.migrator is not self.tracker:
            self.migrator.stop()
