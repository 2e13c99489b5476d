"""The host a scenario runs on: its fixture tree, its discovered topology, and that topology cut to the scenario.

`host` in a scenario names an embedded host (unpacked once per process into a temporary directory removed at exit)
or a fixture directory, relative to the working directory or else to the scenario file. `check_nodes` and
`simulated_topology` are pure; `host_root` and `host_topology` read (and may unpack) the tree.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from cxltierd.emulate.spec import Scenario
from cxltierd.errors import ConfigError
from cxltierd.topology import Tier, Topology


def check_nodes(scenario: Scenario, topology: Topology) -> None:
    """Raise ConfigError unless every node of the scenario is a memory node of the host topology. Pure."""
    known = topology.node_ids
    for spec in scenario.nodes:
        if spec.node not in known:
            raise ConfigError(
                f"{scenario.source}: nodes.{spec.node}: node {spec.node} is not a memory node of host "
                f"{scenario.host!r} (its nodes: {', '.join(map(str, known))})"
            )


def host_root(scenario: Scenario) -> Path:
    """The root directory of the scenario's host: an embedded host (unpacked once) or a fixture directory, relative
    to the working directory or else to the scenario file."""
    from cxltierd import embedded

    if scenario.host in embedded.host_names():
        if scenario.host == "default":
            return embedded.default_root()
        if scenario.host not in _extracted:
            tmp = Path(tempfile.mkdtemp(prefix="cxltierd-host-"))
            atexit.register(shutil.rmtree, tmp, True)
            _extracted[scenario.host] = embedded.extract_host(tmp / "root", scenario.host)
        return _extracted[scenario.host]
    path = Path(scenario.host)
    if not path.is_absolute() and not path.is_dir():
        beside = Path(scenario.source).parent / path
        if beside.is_dir():
            return beside
    if not path.is_dir():
        raise ConfigError(
            f"{scenario.source}: host: {scenario.host!r} is neither an embedded host "
            f"({', '.join(embedded.host_names())}) nor a directory"
        )
    return path


_extracted: dict[str, Path] = {}


def host_topology(scenario: Scenario) -> Topology:
    """Discover and classify the scenario's host (reads its fixture tree)."""
    from cxltierd.discovery import discover
    from cxltierd.hostfs import HostFS
    from cxltierd.topology import classify

    return classify(discover(HostFS(host_root(scenario))))


def simulated_topology(scenario: Scenario, topology: Topology) -> Topology:
    """The host topology cut down to the scenario's nodes, with the scenario's capacities; tiers re-ranked. Pure."""
    specs = {n.node: n for n in scenario.nodes}
    nodes = tuple(
        replace(n, total_bytes=specs[n.node].capacity, free_bytes=specs[n.node].capacity - specs[n.node].used)
        for n in topology.nodes
        if n.node in specs
    )
    tiers: list[Tier] = []
    for tier in topology.tiers:
        members = tuple(n for n in tier.nodes if n in specs)
        if members:
            tiers.append(Tier(tier.name, len(tiers), members))
    return Topology(nodes=nodes, tiers=tuple(tiers), warnings=topology.warnings)
