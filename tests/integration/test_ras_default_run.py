"""The default emulated `cxltierd run` (no --scenario: hotset-failover) on an injected clock at the default 5 s tick:
placement promotes and demotes first, the CXL node is degraded at 120 s, fails at 170 s and is drained to 0 bytes
by the tick after, and status (JSON and text) and metrics show it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cxltierd.app import DEFAULT_SCENARIO, Settings, build
from cxltierd.report.status import live_status_text
from cxltierd.service.daemon import Daemon, FakeClock, Options
from cxltierd.service.metrics import registry_for
from cxltierd.service.status import status_json

GiB = 1 << 30


def metric(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_default_run_degrades_then_drains_the_cxl_node(tmp_path: Path) -> None:
    assert DEFAULT_SCENARIO == "hotset-failover"
    policy = tmp_path / "policy.yaml"
    policy.write_text("interval: 5s\n")  # the built-in default, written so /etc/cxltierd cannot interfere
    rt, loop = build(Settings(backend="emulated", config=str(policy), seed=1, state_dir=str(tmp_path / "state")))
    d = Daemon(rt, loop, Options(), clock=FakeClock())
    assert isinstance(d.clock, FakeClock)
    cxl_used: dict[int, int] = {}
    states: dict[int, str] = {}
    moved_before: dict[str, int] = {}
    try:
        loop.start()
        for t in range(0, 241, 5):
            d.clock.t = float(t)
            d._tick()
            total, free = loop.last.usage[2] if loop.last else (0, 0)
            cxl_used[t] = total - free
            snap = d.snapshot
            assert snap is not None and snap.ras is not None
            states[t] = snap.ras.nodes.get(2, "")
            if t == 115:
                moved_before = dict(status_json(snap)["counters"]["migrated_bytes"])
        snap = d.snapshot
        assert snap is not None
        doc = status_json(snap)
    finally:
        d._shutdown()
    # the placement demo comes first: both directions moved while the node was healthy
    assert moved_before.get("cxl->ddr", 0) > 0 and moved_before.get("ddr->cxl", 0) > 0, moved_before
    # an event at 120 s is read by the tick after it (the RAS step runs before the simulator reaches it)
    assert all(states[t] == "healthy" for t in range(0, 121, 5)), states
    assert all(states[t] == "degraded" for t in range(125, 171, 5)), states
    assert all(states[t] == "failing" for t in range(175, 241, 5)), states
    assert cxl_used[170] >= GiB  # the idle checkpoint and more sit on CXL until the failure ...
    assert cxl_used[175] == 0 and cxl_used[240] == 0  # ... and it is empty one tick after it
    ras = doc["ras"]
    assert ras["nodes"] == {"2": "failing"} and ras["avoided_nodes"] == [2]
    drain = ras["drains"]["2"]
    assert drain["status"] == "done" and drain["remaining"] == 0 and drain["moved"] >= GiB
    assert "uncorrectable cxl_general_media" in ras["memdevs"]["mem0"]["cause"]
    assert [t.split(" ", 1)[1] for t in ras["transitions"]] == [
        "mem0: healthy -> degraded (device health: health_status MAINTENANCE_NEEDED (cxl_memory_module))",
        "mem0: degraded -> failing (uncorrectable cxl_general_media at dpa 0x2000)",
    ]
    text = live_status_text(doc)
    assert "node 2: failing (no placement into it)" in text and "drain of node 2: done" in text
    scrape = generate_latest(registry_for(lambda: snap)).decode()
    assert metric(scrape, "cxltierd_ras_node_state", node="2", state="failing") == 1
    assert metric(scrape, "cxltierd_ras_drain_done", node="2") == 1
    assert metric(scrape, "cxltierd_ras_drain_remaining_bytes", node="2") == 0
    assert metric(scrape, "cxltierd_ras_drain_moved_bytes_total", node="2") == drain["moved"]
    total = metric(scrape, "cxltierd_node_memory_total_bytes", node="2")
    assert total and metric(scrape, "cxltierd_node_memory_free_bytes", node="2") == total
