"""Three tiers on evidence alone (the guest booted with CXLTIERD_LAB_TOPOLOGY=tiers3): node 2 carries HBM-like HMAT
figures (80 GB/s, 15 ns against DDR's 20 GB/s, 10 ns), CXL node 4 is a type-3 device on a root port and node 5 one
behind an emulated switch (QEMU's cxl-upstream adds 150 ns in its CDAT). Without any tier override in the policy,
cxltierd must classify 2 as hbm, 0 and 1 as ddr, the direct CXL node as cxl and the switched one as cxl-far, order
them so, agree with the kernel's memory tiers, and cascade a workload over them: hot part to HBM, warm part to DDR,
cold part left on CXL, a cold workload on the far CXL node left alone.

The figures the kernel reports are printed (tests/lab/README.md has them per kernel), and the host tree discovery
reads is captured into the share ($CXLTIERD_LAB_SHARE/tiers3-host-KERNEL) for fixtures/hosts/qemu-tiers3.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import (
    CXLTIERD,
    DaemonFactory,
    Workload,
    access_figures,
    capture_host,
    dax_target_nodes,
    kernel_tiers,
    metric_pairs,
    numa_maps,
    read,
    settle,
    split,
)

from cxltierd.discovery.live import node_memory
from cxltierd.hostfs import HostFS

CXL_BUS = Path("/sys/bus/cxl/devices")
HBM, DDR = 2, (0, 1)
MIB, HOT_MIB, WARM_MIB, WARM_EVERY, FAR_MIB = 64, 16, 16, 6, 16
TOP_SLACK = 5 << 20  # room on node 2 beyond the hot part: the companion's hot pages (2 MiB on 6.12) climb too,
# and at most one 2 MiB region of the warm part fits beside them
EDGE_MIB = 4  # DAMON's precision at a part's edge
SHARE = 0.75  # of a part's pages on its tier
UP = {"cxl->ddr", "ddr->hbm", "cxl->hbm", "hbm->ddr"}


def cxl_ports(node: int) -> tuple[str, int]:
    """(region, CXL ports between the root and the endpoint) of the CXL node: 1 for a device on a host bridge's root
    port, 2 behind a switch (the endpoint's path in sysfs holds one portN per level)."""
    dax = next(name for name, n in dax_target_nodes().items() if n == node)
    region = next(p.name for p in Path(f"/sys/bus/dax/devices/{dax}").resolve().parents if p.name.startswith("region"))
    endpoint = (CXL_BUS / read(CXL_BUS / region / "target0")).resolve().parent
    return region, sum(1 for part in endpoint.parts if re.fullmatch(r"port\d+", part))


def topology(root: str = "/") -> dict[str, Any]:
    out = subprocess.run([CXLTIERD, "topology", "--root", root, "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


@pytest.fixture(scope="module")
def cxl_pair() -> tuple[int, int]:
    """(direct CXL node, switched CXL node), told apart by the CXL port hierarchy, not by node number."""
    nodes = sorted(dax_target_nodes().values())
    assert len(nodes) == 2, f"two CXL nodes expected in the tiers3 topology, found {nodes}"
    depth = {n: cxl_ports(n)[1] for n in nodes}
    near, far = sorted(nodes, key=lambda n: depth[n])
    assert (depth[near], depth[far]) == (1, 2), depth
    return near, far


def test_classification_follows_the_kernels_evidence(cxl_pair: tuple[int, int]) -> None:
    near, far = cxl_pair
    regions = {n: cxl_ports(n)[0] for n in cxl_pair}
    fig: dict[int, dict[str, int]] = {}
    for n in (*DDR, HBM, near, far):
        found = access_figures(n, regions.get(n))
        assert found is not None, f"node {n}: no access figures under the node or its region"
        print(f"node {n}: {found[0]}: {found[1]}")
        fig[n] = found[1]
    kt = kernel_tiers()
    print(f"kernel memory tiers: {kt}")
    # The evidence: node 2 has more than twice DDR's bandwidth and a slightly higher idle latency (Xeon Max's HBM);
    # the switched CXL node is at least 1.25x slower to the first byte than the direct one.
    ddr_bw = max(fig[n]["read_bandwidth"] for n in DDR)
    assert fig[HBM]["read_bandwidth"] > 2 * ddr_bw, fig
    assert fig[HBM]["read_latency"] > min(fig[n]["read_latency"] for n in DDR), fig
    assert fig[far]["read_latency"] >= 1.25 * fig[near]["read_latency"], fig
    # The kernel's memory tiers (computed from the same figures): HBM above DDR, DDR above both CXL nodes.
    assert kt[HBM] < kt[0] == kt[1] < min(kt[near], kt[far]), kt

    doc = topology()
    kinds = {n["node"]: n["tier"] for n in doc["nodes"]}
    assert kinds == {0: "ddr", 1: "ddr", HBM: "hbm", near: "cxl", far: "cxl-far"}, kinds
    assert [(t["tier"], t["nodes"]) for t in doc["tiers"]] == [
        ("hbm", [HBM]),
        ("ddr", list(DDR)),
        ("cxl", [near]),
        ("cxl-far", [far]),
    ], doc["tiers"]
    reasons = {n["node"]: n["reason"] for n in doc["nodes"]}
    assert "HMAT bandwidth" in reasons[HBM] and regions[far] in reasons[far], reasons
    assert doc["kernel"]["memory_tiers_consistent"] is (kt[near] < kt[far]), (doc["kernel"], kt)
    text = subprocess.run([CXLTIERD, "topology"], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and re.search(r"^\s+3 cxl-far\s+nodes " + str(far), text.stdout, re.M), text.stdout

    # The tree discovery read, for fixtures/hosts/qemu-tiers3 (same verdicts from the copy).
    dest = Path(os.environ["CXLTIERD_LAB_SHARE"]) / f"tiers3-host-{os.environ.get('CXLTIERD_LAB_KERNEL', 'lts')}"
    print(f"captured {capture_host(dest)} paths into {dest}")
    copy = topology(str(dest))
    assert {n["node"]: n["tier"] for n in copy["nodes"]} == kinds
    assert [(t["tier"], t["nodes"]) for t in copy["tiers"]] == [(t["tier"], t["nodes"]) for t in doc["tiers"]]


def policy(cgroup: str | None, hbm_max_used: float) -> dict[str, Any]:
    """No tier override or order: the topology's hbm > ddr > cxl > cxl-far, the hbm watermark leaving node 2 room
    for the hot part only."""
    manage = [{"cgroup": cgroup}] if cgroup else [{"name": "no-such-process-cxltierd"}]
    return {
        "engine": "move_pages",
        "interval": "1s",
        "cooldown": "8s",
        "processes": {"manage": manage, "min_rss": "1MiB"},
        "watermarks": {"hbm": {"min_free_percent": 0, "max_used_percent": hbm_max_used}},
    }


@pytest.mark.usefixtures("no_kernel_migration")
def test_cascade_over_four_tiers_on_evidence(
    cxl_pair: tuple[int, int],
    workload: Callable[..., Workload],
    test_cgroup: str,
    lab_daemon: DaemonFactory,
    pages_on_nodes: Callable[[int, int, int], dict[int, int]],
) -> None:
    near, far = cxl_pair
    mib = 1 << 20
    hot, warm = HOT_MIB * mib, WARM_MIB * mib
    w = workload(near, MIB, HOT_MIB, warm_mib=WARM_MIB, warm_every=WARM_EVERY, cgroup=test_cgroup, cpu=1,
                 companion=True)  # fmt: skip
    cold = workload(far, FAR_MIB, cgroup=test_cgroup, cpu=0)
    assert w.placement() == {near: w.pages} and cold.placement() == {far: cold.pages}

    d = lab_daemon(policy(None, 99))
    d.wait_ticks(2, 120)
    tiers = [(t["tier"], t["nodes"]) for t in d.status()["tiers"]]
    assert [name for name, _ in tiers] == ["hbm", "ddr", "cxl", "cxl-far"], tiers
    mem = node_memory(HostFS("/"), [HBM])
    total, room = mem.total[HBM], mem.available[HBM]
    mark = 100 * (total - room + hot + TOP_SLACK) / total
    print(f"node {HBM}: {total >> 20} MiB, {room >> 20} MiB available: hbm max_used_percent {mark:.3f}")
    d.policy_path.write_text(yaml.safe_dump(policy(test_cgroup, round(mark, 3)), sort_keys=False))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded policy")

    def on(start: int, size: int, tier: tuple[int, ...]) -> float:
        return sum(v for n, v in split(w, pages_on_nodes, start, size).items() if n in tier)

    launched = time.monotonic()
    try:
        d.wait_for(
            lambda: on(0, hot, (HBM,)) >= SHARE and on(hot, warm, DDR) >= SHARE,
            150.0,
            f"hot part on node {HBM} (hbm), warm part on nodes {DDR} (ddr)",
            poll=1.0,
        )
    except AssertionError as e:
        eighths = [split(w, pages_on_nodes, i * 8 * mib, 8 * mib) for i in range(MIB // 8)]
        raise AssertionError(f"{str(e).splitlines()[0]}\nplacement {eighths}\n{d.tail(80)}") from None
    moved = settle(d)
    rest = hot + warm + EDGE_MIB * mib
    cold_part = split(w, pages_on_nodes, rest, w.length - rest)
    print(f"after {time.monotonic() - launched:.0f}s: hot {on(0, hot, (HBM,))}, warm {on(hot, warm, DDR)}, "
          f"cold {cold_part}, far workload {cold.placement()}; moved {moved}")  # fmt: skip
    assert on(hot, warm, (HBM,)) <= 1 - SHARE  # node 2's room went to the hottest part
    assert cold_part == {near: 1.0}, cold_part
    assert cold.placement() == {far: cold.pages}  # cold on the far CXL tier stays there
    assert set(moved) <= UP and moved.get("cxl->ddr", 0) > 0, moved
    assert metric_pairs(d) == moved
    assert numa_maps(w.pid, w.addr) == w.placement()
    assert d.stop() == 0, d.tail()
