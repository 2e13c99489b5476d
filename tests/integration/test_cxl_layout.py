"""The CXL decoders of every fixture host describe a layout the kernel can produce (the rules of the kernel's
region assembly, drivers/cxl/core/region.c): each region sits under a root decoder whose window holds it and whose
ways divide the region's; every decoder on the way to a region's memdevs decodes the region's whole host physical
range; a decoder with N targets is N-way; an endpoint decoder is region-ways-way and holds size/ways of device
memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxltierd.discovery import discover
from cxltierd.hostfs import HostFS

REPO = Path(__file__).resolve().parents[2]
HOSTS = sorted(p.name for p in (REPO / "fixtures" / "hosts").iterdir() if (p / "sys/bus/cxl/devices").is_dir())


@pytest.mark.parametrize("name", HOSTS)
def test_decoders_describe_a_layout_the_kernel_can_produce(name):
    facts = discover(HostFS(str(REPO / "fixtures" / "hosts" / name)))
    decoders = {d.decoder: d for d in facts.decoders}
    assert facts.regions, name
    for d in facts.decoders:
        if d.kind != "endpoint" and d.size:
            assert d.interleave_ways == len(d.target_list), (name, d.decoder, d.target_list)
    for g in facts.regions:
        root = decoders[os.path.basename(os.path.dirname(g.path))]
        assert root.kind == "root", (name, g.region)
        assert root.start <= g.resource and g.resource + g.size <= root.start + root.size, (name, g.region)
        assert g.interleave_ways % root.interleave_ways == 0, (name, g.region)
        assert len(g.mappings) == g.interleave_ways
        for m in g.mappings:
            ep = decoders[m.decoder]
            assert (ep.start, ep.size) == (g.resource, g.size), (name, g.region, ep.decoder)
            assert ep.interleave_ways == g.interleave_ways and ep.region == g.region
            assert ep.dpa_size * g.interleave_ways == g.size, (name, ep.decoder)
        above = [d for d in facts.decoders if d.kind == "switch" and d.region == g.region]
        assert above, (name, g.region)
        for d in above:
            assert (d.start, d.size) == (g.resource, g.size), (name, g.region, d.decoder)
