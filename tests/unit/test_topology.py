"""Tier order by evidence on the lab's two kernels: the qemu-cxl-node4 fixture (6.12) and the same guest as 7.3 shows it."""

from __future__ import annotations

import shutil
from pathlib import Path

from cxltierd.discovery import discover
from cxltierd.hostfs import HostFS
from cxltierd.topology import Hmat, classify

HOSTS = Path(__file__).resolve().parents[2] / "fixtures" / "hosts"
REGION0 = "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0"


def order(root: Path) -> str:
    topo = classify(discover(HostFS(root)))
    return " > ".join(f"{t.name}[{','.join(map(str, t.nodes))}]" for t in topo.tiers)


def as_on_7_3(tmp_path: Path) -> Path:
    """The 6.12 capture changed into what the 7.3 guest shows (measured in the lab): node 4 has no access0/access1 of
    its own, region0's are 182/282 ns and 16000 MB/s (6.12: 17180/17280), node 4 is in memory_tier133 (6.12: 9924)."""
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "qemu-cxl-node4", root, symlinks=True)
    for a in ("access0", "access1"):
        shutil.rmtree(root / f"sys/devices/system/node/node4/{a}")
        for name, value in (("read_latency", 182), ("write_latency", 282)):
            (root / REGION0 / a / name).write_text(f"{value}\n")
    tiers = root / "sys/devices/virtual/memory_tiering"
    (tiers / "memory_tier9924").rename(tiers / "memory_tier133")
    return root


def test_cost_is_latency_over_bandwidth_like_the_kernels_memory_tiers():
    assert Hmat(80, 80, 5120, 5120).cost == 160 / 10240
    assert Hmat(182, 282, 16000, 16000).cost == 464 / 32000  # cheaper than node 2 although slower to first byte
    assert Hmat(80, None, 5120, None).cost == 160 / 10240  # a missing write figure counts as the read one
    assert Hmat(80, 80, None, None).cost is None and Hmat(None, None, 5120, 5120).cost is None


def test_6_12_evidence_puts_node_2_before_the_cxl_node():
    """6.12: node 2 HMAT 80/80 ns, 5120 MB/s; node 4 17180/17280 ns, 16000 MB/s (its own access0, same as region0's)."""
    assert order(HOSTS / "qemu-cxl-node4") == "ddr[0,1] > unknown[2] > cxl[4]"


def test_7_3_evidence_puts_the_cxl_node_before_node_2(tmp_path):
    """7.3: node 4's figures only under region0 (182/282 ns, 16000 MB/s): latency alone favours node 2, latency over
    bandwidth (the kernel's memory-tier rule, 464/32000 against 160/10240) favours node 4, as its memory tiers do."""
    root = as_on_7_3(tmp_path)
    topo = classify(discover(HostFS(root)))
    assert topo.node(4).hmat == Hmat(182, 282, 16000, 16000)
    assert order(root) == "ddr[0,1] > cxl[4] > unknown[2]"
    assert topo.warnings == ()  # agrees with the kernel's memory tiers (4: ddr, 133: cxl, 144: node 2)
    # without any access figures for node 4 the kernel's memory tier decides, and agrees
    for a in ("access0", "access1"):
        shutil.rmtree(root / REGION0 / a)
    assert classify(discover(HostFS(root))).node(4).hmat is None
    assert order(root) == "ddr[0,1] > cxl[4] > unknown[2]"
