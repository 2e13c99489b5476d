"""Bandwidth telemetry: the sysfs perf PMU parsers (format/, events/, .scale/.unit, cpumask), finding the uncore
memory-controller and CXL PMU counters of a fixture tree, the meter's bytes/s, and the fallback without counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxltierd.discovery.pmu import bytes_per_count, encode, find, parse_cpulist, parse_format, parse_terms
from cxltierd.engines.perfevent import BandwidthMeter, PerfError
from cxltierd.facts import DaxDevice, HostFacts, Mapping, NodeFacts, Region
from cxltierd.hostfs import HostFS

TREE = Path(__file__).resolve().parents[2] / "fixtures" / "pmu"
FACTS = HostFacts(
    root="/",
    nodes=(NodeFacts(node=0, cpus=(0, 1)), NodeFacts(node=1, cpus=(2, 3)), NodeFacts(node=4)),
    regions=(Region(region="region0", path="", mappings=(Mapping(0, "decoder2.0", "mem0"),)),),
    dax=(DaxDevice(chardev="dax0.0", path="", kind="cxl-ram", region="region0", target_node=4),),
)


def test_format_terms_and_encoding():
    assert parse_format("config:0-7\n") == ("config", ((0, 7),))
    assert parse_format("config1:16") == ("config1", ((16, 16),))
    assert parse_format("config:0-7,32-35") == ("config", ((0, 7), (32, 35)))
    for bad in ("config:0-7x", "confug:1", "config:8-3", "config:0-64"):
        with pytest.raises(ValueError):
            parse_format(bad)
    assert parse_terms("event=0x04,umask=0x03\n") == {"event": 4, "umask": 3}
    assert parse_terms("edge,config=0x10") == {"edge": 1, "config": 16}
    formats = {"event": parse_format("config:0-7"), "umask": parse_format("config:8-15")}
    assert encode(parse_terms("event=0x04,umask=0x0c"), formats) == [0x0C04, 0, 0]
    split = {"x": parse_format("config:0-3,32-35"), "t": parse_format("config1:0-15")}
    assert encode({"x": 0xAB, "t": 7}, split) == [(0xA << 32) | 0xB, 7, 0]
    with pytest.raises(ValueError, match="no format"):
        encode({"cmask": 1}, formats)
    with pytest.raises(ValueError, match="does not fit"):
        encode({"event": 0x100}, formats)
    assert parse_cpulist("0-2,8\n") == [0, 1, 2, 8]
    assert bytes_per_count("6.103515625e-5", "MiB", 1) == pytest.approx(64.0)
    assert bytes_per_count(None, None, 64) == 64
    with pytest.raises(ValueError, match="unit"):
        bytes_per_count("1", "furlongs", 64)


def test_find_on_a_fixture_tree_with_imc_and_cxl_pmus():
    t = find(HostFS(TREE), FACTS)
    got = {(c.pmu, c.event, c.cpu, c.node, c.direction): (c.type, c.config, c.config1) for c in t.counters}
    assert got[("uncore_imc_0", "cas_count_read", 0, 0, "read")] == (14, 0x0304, 0)
    assert got[("uncore_imc_1", "cas_count_write", 2, 1, "write")] == (14, 0x0C04, 0)
    assert got[("cxl_pmu_mem0.0", "s2m_drs_memdata", 1, 4, "read")] == (25, 0x1E98000E00000001, 0)
    assert got[("cxl_pmu_mem0.0", "m2s_rwd_memwr", 1, 4, "write")] == (25, 0x1E98000500000002, 0)
    assert len(t.counters) == 2 * 2 * 2 + 2  # two IMCs x two events x two sockets, two CXL events
    assert all(c.bytes_per_count == pytest.approx(64.0) for c in t.counters)
    assert t.nodes() == (0, 1, 4)
    assert "from cxl_pmu and uncore_imc counters" in t.reason and "node(s) 0,1,4" in t.reason
    assert "unreadable: uncore_imc_2" in t.reason  # its format file does not parse: left out, named


def test_no_counters_falls_back_to_estimates(tmp_path: Path):
    (tmp_path / "sys/bus/event_source/devices/cpu").mkdir(parents=True)
    t = find(HostFS(tmp_path), FACTS)
    assert t.counters == () and "access-rate estimates" in t.reason
    assert "access-rate estimates" in find(HostFS(tmp_path / "nothing"), FACTS).reason
    # a CXL PMU whose memdev is onlined as no node counts nothing the model can use
    facts = HostFacts(root="/", nodes=FACTS.nodes)
    t = find(HostFS(TREE), facts)
    assert {c.pmu for c in t.counters} == {"uncore_imc_0", "uncore_imc_1"}


def test_meter_bytes_per_second_and_failures():
    counters = find(HostFS(TREE), FACTS).counters
    values: dict[int, int] = {}

    def opener(c):
        if c.pmu == "uncore_imc_1":
            raise PerfError(f"perf_event_open {c.pmu}: No such device", 19)
        fd = len(values) + 100
        values[fd] = 0
        return fd

    m = BandwidthMeter(counters, opener=opener, reader=lambda fd: values[fd], closer=lambda fd: None)
    errors = m.open()
    assert len(errors) == 4 and all("uncore_imc_1" in e for e in errors)
    assert m.nodes() == (0, 1, 4)  # uncore_imc_0 counts both sockets
    assert m.sample(10.0) == {}  # the baseline
    for fd in values:
        values[fd] += 1_000_000
    got = m.sample(12.0)
    # node 0: imc_0 read + write on CPU 0; node 4: the CXL read + write; 1e6 counts x 64 B / 2 s each
    assert got[0] == pytest.approx(2 * 1e6 * 64 / 2) and got[4] == pytest.approx(2 * 1e6 * 64 / 2)
    assert m.sample(12.0) == {}  # no time passed

    def broken(fd):
        raise OSError(5, "Input/output error")

    m.reader = broken
    assert m.sample(13.0) == {} and m.last is None
    m.close()
    assert m.sample(14.0) == {} and m.nodes() == ()
