"""What counts as free: node memory read from the page-cache fixture host (DDR node 0 is 97% used, 60% of it page
cache) and the placement decisions it leads to. MemFree alone would demote anonymous memory for nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cxltierd.discovery import discover
from cxltierd.discovery.live import node_memory
from cxltierd.hostfs import HostFS
from cxltierd.model import Gates, RegionHeat
from cxltierd.policy.decide import PlacementState, decide
from cxltierd.policy.gates import kernel_gates
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import build_policy
from cxltierd.topology import classify

HOSTS = Path(__file__).resolve().parents[2] / "fixtures" / "hosts"
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
POLICY = build_policy({"interval": 1, "rate_limit": {"mb_per_s": 100000}, "hotness": {"hot_threshold": 1}})


def test_node_memory_counts_page_cache_and_slab_as_available():
    mem = node_memory(HostFS(HOSTS / "page-cache"), [0, 1, 2])
    assert mem.total[0] == 64 * GiB and mem.free[0] == 2013266 * KiB  # 3% free
    # free - reserve (high marks: 41942 pages) + cache - low marks (25165 pages) + slab - low marks
    low, reserve = 25165 * 4096, 41942 * 4096
    assert mem.available[0] == 2013266 * KiB - reserve + 40265318 * KiB - low + 1017118 * KiB - low
    assert 0.62 < mem.available[0] / mem.total[0] < 0.64
    assert mem.available[2] < mem.free[2]  # no cache on the CXL node: only its reserve comes off
    assert set(mem.free) == set(mem.available) == set(mem.total) == {0, 1, 2}


@pytest.mark.parametrize("zoneinfo", [None, "Node x, zone Normal\n", "Node 0, zone Normal\n  low 1e9\n", "\0\xff"])
def test_without_a_readable_zoneinfo_nothing_is_held_back(tmp_path, zoneinfo):
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "page-cache", root, symlinks=True)
    if zoneinfo is None:
        (root / "proc/zoneinfo").unlink()
    else:
        (root / "proc/zoneinfo").write_text(zoneinfo)
    mem = node_memory(HostFS(root), [0, 9])  # node 9 does not exist: left out
    assert mem.available == {0: (2013266 + 40265318 + 1017118) * KiB} and set(mem.free) == {0}


def test_page_cache_is_no_reason_to_demote():
    fs = HostFS(HOSTS / "page-cache")
    topo = classify(discover(fs))
    mem = node_memory(fs, list(topo.node_ids))
    cold = [RegionHeat(100, 0x7F0000000000 + i * 2 * MiB, 2 * MiB, 0, 0.5) for i in range(50)]
    hot = [RegionHeat(200, 0x7E0000000000 + i * 2 * MiB, 2 * MiB, 2, 500.0) for i in range(10)]
    by_memfree = PlacementState(free_bytes=mem.free, total_bytes=mem.total)
    old = decide(topo, cold + hot, POLICY, by_memfree, now=10.0)
    assert sum(m.src == 0 and m.dst == 2 for m in old.moves) == 50  # MemFree 3% < 5%: every cold region goes
    assert any(m.reason.startswith("demote: ddr node 0 has 3.0% free") for m in old.moves)
    by_available = PlacementState(free_bytes=mem.free, total_bytes=mem.total, available_bytes=mem.available)
    new = decide(topo, cold + hot, POLICY, by_available, now=10.0)
    assert not [m for m in new.moves if m.src == 0]  # nothing demoted
    assert sorted(m.start for m in new.moves if m.src == 2) == sorted(r.start for r in hot)  # hot data promoted
    # kernel-executed engines: the gates on DDR node 0 (fast[0]) open promotion instead of forcing demotion
    r = roles(topo, POLICY)
    assert r.fast[0] == 0
    assert kernel_gates(r, POLICY, mem.free, mem.total, Gates()) == Gates(promote=False, demote=True)
    assert kernel_gates(r, POLICY, mem.available, mem.total, Gates()) == Gates(promote=True, demote=False)
