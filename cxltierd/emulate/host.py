"""The host a scenario runs on: its fixture tree, its discovered topology, and that topology cut to the scenario.

`host` in a scenario names an embedded host (unpacked once per process into a temporary directory removed at exit)
or a fixture directory, relative to the working directory or else to the scenario file. `check_nodes`,
`simulated_topology` and `scenario_facts` are pure; `host_root` and `host_topology` read (and may unpack) the tree.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from cxltierd.emulate.spec import Scenario
from cxltierd.errors import ConfigError
from cxltierd.facts import HostFacts
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


def scenario_facts(scenario: Scenario, facts: HostFacts) -> HostFacts:
    """The host's facts with the scenario's capacities, so that what the daemon reports agrees with what it runs.
    Pure.

    A simulated node's meminfo totals become the scenario's; a CXL region onlined as a simulated node becomes that
    node's size, and with it the region's dax devices (memory block counts scaled alike), the memdevs it interleaves
    (an equal share each), the decoders of its interleave set (the whole range; device memory a share each) and
    its root decoder's window, grown when it no longer holds the region. Nodes and regions the scenario does not
    simulate are left as the host tree has them."""
    specs = {n.node: n for n in scenario.nodes}
    nodes = tuple(
        replace(n, total_bytes=specs[n.node].capacity, free_bytes=specs[n.node].capacity - specs[n.node].used)
        if n.node in specs
        else n
        for n in facts.nodes
    )
    sizes: dict[str, int] = {}  # region -> its new size
    for g in facts.regions:
        node = facts.region_node(g.region)
        if node in specs and g.size:
            sizes[g.region] = specs[node].capacity
    regions, dax, memdevs, decoders = list(facts.regions), list(facts.dax), list(facts.memdevs), list(facts.decoders)
    for i, g in enumerate(regions):
        if g.region not in sizes:
            continue
        size, ways = sizes[g.region], max(g.interleave_ways or 1, 1)
        regions[i] = replace(g, size=size)
        for j, x in enumerate(dax):
            if x.region == g.region and x.size:
                scale = size / x.size
                dax[j] = replace(
                    x,
                    size=size,
                    online_memblocks=round(x.online_memblocks * scale),
                    total_memblocks=round(x.total_memblocks * scale),
                )
        members = {m.memdev for m in g.mappings}
        memdevs = [replace(m, ram_size=size // ways) if m.memdev in members else m for m in memdevs]
        end = (g.resource or 0) + size
        root = g.path.rstrip("/").rsplit("/", 2)[-2] if "/" in g.path else None
        for k, d in enumerate(decoders):
            if d.region == g.region:
                decoders[k] = replace(d, size=size, dpa_size=size // ways if d.kind == "endpoint" else d.dpa_size)
            elif d.decoder == root and d.start is not None and d.size is not None and d.start + d.size < end:
                decoders[k] = replace(d, size=end - d.start)
    return replace(
        facts, nodes=nodes, regions=tuple(regions), dax=tuple(dax), memdevs=tuple(memdevs), decoders=tuple(decoders)
    )
