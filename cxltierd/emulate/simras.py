"""RAS in `cxltierd simulate`: a scenario's `ras_events:` run through the daemon's own Failover (the emulated tracefs,
the same reader and health model, the drain by the simulator), tick by tick beside the loop, with what happened
kept for the simulate output.

The host tree is copied into a temporary directory (the scripted trace lines are written into its tracefs) and
removed by close().
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cxltierd.discovery import discover
from cxltierd.emulate.host import host_root, scenario_facts
from cxltierd.emulate.memory import SimulatedMemory
from cxltierd.emulate.ras import ScriptedTrace
from cxltierd.emulate.spec import Scenario
from cxltierd.emulate.tree import copy_tree
from cxltierd.facts import HostFacts
from cxltierd.failover import Failover, RegionMover
from cxltierd.hostfs import HostFS
from cxltierd.loop import Loop, TickReport
from cxltierd.ras.health import Transition


@dataclass
class RasSummary:
    """What RAS did in a simulated run: the health transitions, each node's drain, and what the loop moved into a
    node while it was kept off placement (zero when the avoidance holds)."""

    transitions: list[str] = field(default_factory=list)  # "12s mem0: degraded -> failing (...)"
    drains: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)  # node -> status, moved, remaining
    nodes: dict[int, str] = field(default_factory=dict)  # node -> final health state
    into_avoided: int = 0  # bytes the loop moved into an avoided node


class _Recording(Failover):
    """A Failover that also keeps every transition (the daemon keeps the latest few)."""

    into: list[str]

    def record(self, t: Transition) -> None:
        """Log it as the daemon does, and keep it."""
        super().record(t)
        self.into.append(f"{t.time:g}s {t}")


class SimulatedRas:
    """The Failover of a simulated run over a private copy of the scenario's host tree."""

    def __init__(self, scenario: Scenario, sim: SimulatedMemory) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="cxltierd-simulate-"))
        try:
            fs = HostFS(copy_tree(host_root(scenario), self.tmp / "root"))
            self.facts: HostFacts = scenario_facts(scenario, discover(fs))
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        base = next((r.resource for r in self.facts.regions if r.resource is not None), 0)
        self.summary = RasSummary()
        self.failover = _Recording(ScriptedTrace(fs, sim, scenario.ras_events, base), RegionMover(), fs, None)
        self.failover.into = self.summary.transitions

    def tick(self, now: float, loop: Loop) -> None:
        """RAS before the loop's tick, as the daemon does it."""
        self.failover.tick(now, loop)

    def after(self, report: TickReport, loop: Loop) -> None:
        """Count what the loop's own moves put into an avoided node this tick."""
        self.summary.into_avoided += sum(t.bytes for t in report.outcome.transfers if t.dst in loop.avoid)

    def close(self) -> RasSummary:
        """The summary of the run; the tree copy is removed."""
        self.failover.close()
        view = self.failover.view()
        self.summary.nodes = dict(view.nodes)
        self.summary.drains = {n: (p.status, p.moved, p.remaining) for n, p in view.drains.items()}
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.summary
