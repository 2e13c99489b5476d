"""The emulated backend's memory system: scenarios (YAML), their workloads, and the simulator that runs them.

    scenario = load_scenario("zipf-static")            # or a path to a YAML file
    topology = simulated_topology(scenario, host_topology(scenario))
    sim = SimulatedMemory(scenario, topology, seed=7)  # a Tracker and a Migrator
    sample = sim.sample(1.0); outcome = sim.apply(plan, 1.0)

`build_simulation(name_or_path)` does the first three lines in one call. `cxltierd.emulate.simulate.run` runs a
scenario under cxltierd's policy or one of the baselines (cxltierd.emulate.baselines); it is not imported here, as
it needs the loop.
"""

from __future__ import annotations

from cxltierd.emulate.host import check_nodes, host_root, host_topology, simulated_topology
from cxltierd.emulate.load import load_scenario, read_scenario, scenario_names
from cxltierd.emulate.memory import VBASE, HotplugRecord, SimStats, SimulatedMemory
from cxltierd.emulate.scenario import parse_scenario
from cxltierd.emulate.spec import Scenario
from cxltierd.topology import Topology

__all__ = [
    "VBASE",
    "HotplugRecord",
    "Scenario",
    "SimStats",
    "SimulatedMemory",
    "build_simulation",
    "check_nodes",
    "host_root",
    "host_topology",
    "load_scenario",
    "parse_scenario",
    "read_scenario",
    "scenario_names",
    "simulated_topology",
]


def build_simulation(
    name_or_path: str, seed: int | None = None, start: float = 0.0
) -> tuple[Scenario, Topology, SimulatedMemory]:
    """Load a scenario, discover its host, and build the simulator.

    Returns the scenario, the topology the loop should use (the host cut down to the scenario's nodes, with the
    scenario's capacities), and the simulator. `start` is the caller's clock value at scenario time 0.
    """
    scenario = read_scenario(name_or_path)
    host = host_topology(scenario)
    check_nodes(scenario, host)
    return scenario, simulated_topology(scenario, host), SimulatedMemory(scenario, host, seed=seed, start=start)
