"""Per-tenant telemetry: memory.numa_stat parsed and read through HostFS, cgroups below a prefix, the tick's tenant
accounting, and the tenants in `status` (JSON, text) and in the metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from cxltierd.discovery.cgroups import cgroups_under, memory_by_node, parse_numa_stat, read_numa_stat
from cxltierd.engines.base import Engines
from cxltierd.hostfs import HostFS
from cxltierd.loop import Loop
from cxltierd.model import Process, Sample
from cxltierd.policy.schema import build_policy
from cxltierd.report.status import live_status_text
from cxltierd.report.top import top_lines
from cxltierd.service.metrics import registry_for
from cxltierd.service.publish import ServiceState, snapshot
from cxltierd.service.status import status_json
from tests.unit.test_loop import TOPO, Fake

MiB = 1 << 20
R = 2 * MiB
NUMA_STAT = """anon N0=1048576 N1=0 N4=2097152
file N0=4096 N1=8192 N4=0
kernel_stack N0=16384 N1=0 N4=0
shmem N0=0 N1=0 N4=0
garbage
anon_thp Nx=3
"""


def test_parse_numa_stat_and_sum_anon_and_file():
    stat = parse_numa_stat(NUMA_STAT)
    assert stat["anon"] == {0: MiB, 1: 0, 4: 2 * MiB}
    assert "garbage" not in stat and "anon_thp" not in stat
    assert memory_by_node(stat) == {0: MiB + 4096, 1: 8192, 4: 2 * MiB}


def cgroup_tree(root: Path) -> None:
    for d in ("ai.slice/inference/worker", "ai.slice/train", "batch.slice"):
        (root / "sys/fs/cgroup" / d).mkdir(parents=True)
    (root / "sys/fs/cgroup/ai.slice/inference/memory.numa_stat").write_text(NUMA_STAT)


def test_read_numa_stat_and_cgroups_under_through_hostfs(tmp_path):
    cgroup_tree(tmp_path)
    fs = HostFS(tmp_path)
    assert read_numa_stat(fs, "/ai.slice/inference") == {0: MiB + 4096, 1: 8192, 4: 2 * MiB}
    assert read_numa_stat(fs, "/ai.slice/train") is None
    assert cgroups_under(fs, "/ai.slice") == ["/ai.slice", "/ai.slice/inference", "/ai.slice/train",
                                              "/ai.slice/inference/worker"]  # fmt: skip
    assert cgroups_under(fs, "/nope") == []
    assert "/batch.slice" in cgroups_under(fs, "/")


class Procs(Fake):
    """Fake with two processes in two cgroups: regions 0-4 belong to pid 1, 5-9 to pid 2."""

    def sample(self, now: float) -> Sample:
        s = super().sample(now)
        regions = tuple(r if r.start // R < 5 else type(r)(2, r.start, r.size, r.node, r.accesses) for r in s.regions)
        procs = {1: Process(1, "serve", cgroup="/ai.slice/inference"), 2: Process(2, "scan", cgroup="/batch.slice")}
        return Sample(regions=regions, free_bytes=s.free_bytes, total_bytes=s.total_bytes, processes=procs)


POLICY = {
    "interval": 1,
    "rate_limit": {"mb_per_s": 100000},
    "tenants": [
        {"name": "inference", "match": {"cgroup": "/ai.slice/inference"}, "fast_min": "8MiB", "class": "latency"},
        {"name": "batch", "match": {"cgroup": "/batch.slice"}, "fast_max": "10%", "weight": 2},
    ],
}


def test_tick_accounts_tenants_and_status_and_metrics_show_them():
    fake = Procs({i: 50.0 for i in range(10)})  # all on CXL node 2, all hot
    lp = Loop(TOPO, Engines("fake", fake, fake), build_policy(POLICY))
    lp.tick(0.0)
    r = lp.tick(1.0)
    inf, bat, oth = (r.tenants[k] for k in ("inference", "batch", "other"))
    assert list(r.tenants) == ["inference", "batch", "other"]
    assert (inf.guarantee, inf.klass, bat.cap, bat.weight) == (8 * MiB, "latency", 200 * MiB, 2.0)
    assert inf.bytes == {"cxl": 10 * MiB}  # the tick's sample, taken before its moves
    assert inf.moves == 5 and bat.moves == 5 and oth.moves == 0  # everything promoted (room on DDR)
    svc = ServiceState(backend="emulated", started=0.0)
    r = lp.tick(2.0)
    snap = snapshot(lp, svc, {}, None, {"inference": {0: 10 * MiB, 2: 0}})
    doc = status_json(snap)
    rows = {t["tenant"]: t for t in doc["tenants"]}
    assert rows["inference"]["fast_bytes"] == 10 * MiB and rows["inference"]["shortfall_bytes"] == 0
    assert rows["inference"]["node_bytes"] == {"0": 10 * MiB, "2": 0}
    assert rows["batch"]["moves"] == 5 and rows["other"]["guarantee_bytes"] == 0
    text = live_status_text(doc)
    assert "Tenants:" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("inference"))
    assert "latency" in line and "8.0 MiB" in line and "N0 10.0 MiB" in line
    screen = top_lines(doc, None, 1.0, width=200)  # `cxltierd top` shows the same table
    assert "Tenants:" in screen and line in screen
    metrics = generate_latest(registry_for(lambda: snap)).decode()
    assert 'cxltierd_tenant_memory_bytes{tenant="inference",tier="ddr"} 1.048576e+07' in metrics
    assert 'cxltierd_tenant_fast_guarantee_bytes{tenant="inference"} 8.388608e+06' in metrics
    assert 'cxltierd_tenant_fast_shortfall_bytes{tenant="other"} 0.0' in metrics
    assert 'cxltierd_tenant_moves_total{tenant="batch"} 5.0' in metrics
    assert 'cxltierd_tenant_node_memory_bytes{node="0",tenant="inference"} 1.048576e+07' in metrics
    assert len([x for x in metrics.splitlines() if x.startswith("cxltierd_tenant_fast_cap_bytes{")]) == 3


def test_no_tenants_no_tenant_series():
    fake = Fake({0: 5.0})
    lp = Loop(TOPO, Engines("fake", fake, fake), build_policy({}))
    lp.tick(0.0)
    snap = snapshot(lp, ServiceState(backend="emulated", started=0.0), {})
    assert status_json(snap)["tenants"] == []
    assert "cxltierd_tenant" not in generate_latest(registry_for(lambda: snap)).decode()
    assert "Tenants:" not in live_status_text(status_json(snap))
