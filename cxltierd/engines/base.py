"""The engine contract: what the placement loop calls on whatever samples heat and moves memory.

The loop calls `tracker.sample(now)` for the heat of memory regions and the free memory of each node, builds a
Plan with the pure decision function (cxltierd.policy.decide), and hands it to `migrator.apply(plan, now)`, which
returns an Outcome. Kernel-executed engines (DAMOS, NUMA-balancing tiering) implement the same calls:
`configure()` turns the policy into kernel settings and `apply()` reports what the kernel did since the last call.
The value types live in cxltierd.model.
"""

from __future__ import annotations

from typing import Any, Protocol

from cxltierd.model import Outcome, Plan, Sample
from cxltierd.topology import Topology


class Tracker(Protocol):
    """Samples the heat of managed memory."""

    name: str

    def configure(self, topology: Topology, policy: Any) -> None: ...

    def sample(self, now: float) -> Sample: ...

    def stop(self) -> None: ...


class Migrator(Protocol):
    """Moves memory between nodes (or reports what the kernel moved).

    An engine whose `kernel_executed` attribute is true (DAMOS, NUMA-balancing tiering) gets an empty plan every
    tick and reports in apply() what the kernel moved since the last call; configure() must write nothing when
    policy.dry_run is set.
    """

    name: str

    def configure(self, topology: Topology, policy: Any) -> None: ...

    def apply(self, plan: Plan, now: float) -> Outcome: ...

    def stop(self) -> None: ...
