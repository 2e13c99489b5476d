"""The emulated host's CXL errors: a scenario's `ras_events:` (cxltierd.emulate.rasscript) written as kernel trace
lines into an emulated tracefs in the emulated tree, so the daemon reads them through the same tracefs reader as on
a host. `install_tracefs` gives the tree a tracefs with the cxl events (the instance cxltierd makes is populated as
the kernel would on mkdir); `ScriptedTrace` is the daemon's line source: before each read it appends the scripted
lines that are due at the simulator's time to the instance's trace_pipe.
"""

from __future__ import annotations

from pathlib import Path

from cxltierd.discovery.tracefs import INSTANCE, TraceInstance
from cxltierd.emulate.memory import SimulatedMemory
from cxltierd.emulate.rasscript import RasScript, trace_line
from cxltierd.hostfs import HostFS
from cxltierd.ras.events import EVENT_NAMES

TRACING = "sys/kernel/tracing"


def install_tracefs(root: Path) -> None:
    """A tracefs in the tree with the cxl events defined and cxltierd's instance populated (kernel-made on mkdir)."""
    base = root / TRACING
    for d in (base, base / "instances" / INSTANCE):
        for name in EVENT_NAMES:
            (d / "events/cxl" / name).mkdir(parents=True, exist_ok=True)
            (d / "events/cxl" / name / "enable").write_text("0\n")
        (d / "events/cxl/enable").write_text("0\n")
    (base / "instances" / INSTANCE / "trace_pipe").write_text("")


class ScriptedTrace(TraceInstance):
    """The tracefs reader over the emulated tree, with the scenario's events written into trace_pipe when due."""

    def __init__(self, fs: HostFS, sim: SimulatedMemory, script: tuple[RasScript, ...], region_base: int) -> None:
        super().__init__(fs)
        self.sim = sim
        self.script = script
        self.sent = 0
        self.region_base = region_base  # the HPA of DPA 0 (the emulated region's start)

    def open(self) -> None:
        """Make the emulated tracefs when the tree has none, then open the instance as on a host."""
        if self.tracing_root(self.fs) is None:
            install_tracefs(self.fs.root)
        elif not self.fs.exists(f"/{TRACING}/instances/{INSTANCE}/trace_pipe"):
            install_tracefs(self.fs.root)  # a previous close removed the instance: the kernel would remake it
        super().open()

    def read(self) -> list[str]:
        """Write the due lines into trace_pipe, then read it as on a host."""
        if self.path is not None:
            now = self.sim.now - self.sim.start
            due = []
            while self.sent < len(self.script) and self.script[self.sent].at <= now:
                s = self.script[self.sent]
                due.append(trace_line(s, s.at, self.region_base + s.dpa))
                self.sent += 1
            if due:
                pipe = self.fs.path(f"{self.path}/trace_pipe")
                with pipe.open("a") as f:
                    f.write("".join(line + "\n" for line in due))
        return super().read()
