"""The emulated host's numbers agree: the CXL region, its dax device and its memdevs are as large as the node the
scenario simulates, in `status`, in /metrics and per tier, instead of the fixture's 256 GiB next to a 6 GiB tier."""

from __future__ import annotations

import urllib.request
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cxltierd.discovery import discover
from cxltierd.emulate import read_scenario
from cxltierd.emulate.host import scenario_facts
from cxltierd.emulate.spec import NodeSpec
from cxltierd.hostfs import HostFS
from cxltierd.service.control import request
from tests.integration.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]
GiB = 1 << 30


def test_status_metrics_and_tiers_agree_on_the_emulated_host(tmp_path):
    d = Daemon(tmp_path, "--scenario", "hotset-shift")
    try:
        d.wait_message("READY=1")
        s = request(d.control, "status")["status"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=10).read().decode()
    finally:
        d.stop()
    samples = [x for f in text_string_to_metric_families(text) for x in f.samples]

    def metric(name: str, **labels: str) -> float:
        (value,) = [x.value for x in samples if x.name == name and labels.items() <= x.labels.items()]
        return value

    nodes = {n["node"]: n for n in s["nodes"]}
    (cxl,) = [t for t in s["tiers"] if t["tier"] == "cxl"]
    regions = s["cxl"]["regions"]
    assert regions and cxl["total_bytes"] == 6 * GiB  # hotset-shift simulates a 6 GiB CXL node
    assert sum(g["size"] for g in regions if g["target_node"] in cxl["nodes"]) == cxl["total_bytes"]
    assert metric("cxltierd_tier_memory_total_bytes", tier="cxl") == cxl["total_bytes"]
    for g in regions:
        node = g["target_node"]
        assert g["size"] == nodes[node]["total_bytes"], (g, nodes[node])
        assert metric("cxltierd_cxl_region_size_bytes", region=g["region"]) == g["size"]
        assert metric("cxltierd_node_memory_total_bytes", node=str(node)) == g["size"]
        assert sum(x["size"] for x in g["daxregion"]["devices"]) == g["size"]
        mine = {m["memdev"] for m in g["mappings"]}
        ram = [m["ram_size"] for m in s["cxl"]["memdevs"] if m["memdev"] in mine]
        assert sum(ram) == g["size"]


def test_scenario_facts_resize_an_interleaved_region_consistently():
    facts = discover(HostFS(str(REPO / "fixtures/hosts/interleaved-cxl")))
    scenario = read_scenario("hotset-shift")
    scenario = replace(scenario, nodes=(NodeSpec(0, 8 * GiB), NodeSpec(2, 10 * GiB)))
    out = scenario_facts(scenario, facts)
    (g,) = [g for g in out.regions if g.region == "region0"]
    assert g.size == 10 * GiB and out.node(2).total_bytes == 10 * GiB and out.node(0).total_bytes == 8 * GiB
    assert [m.ram_size for m in out.memdevs] == [5 * GiB, 5 * GiB, 128 * GiB]  # mem2 feeds no simulated node
    for dec in out.decoders:
        if dec.region == "region0":
            assert dec.size == 10 * GiB
            assert dec.kind != "endpoint" or dec.dpa_size == 5 * GiB
    (dax0,) = [x for x in out.dax if x.region == "region0"]
    assert dax0.size == 10 * GiB and dax0.total_memblocks == 5  # 2 GiB blocks
    assert out.regions[1] == facts.regions[1] and out.node(1) == facts.node(1)
