"""RAS end to end on the emulated host: a scenario's scripted CXL errors go through the emulated tracefs and the same
reader as on a host; the daemon degrades, then drains the CXL node at the policy's rate, keeps placing nothing
there, survives a reload with its state, and shows it all in status (JSON and text) and metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cxltierd.app import Settings, build
from cxltierd.report.status import live_status_text
from cxltierd.service.daemon import Daemon, FakeClock, Options
from cxltierd.service.metrics import registry_for
from cxltierd.service.status import status_json

SCENARIO = Path(__file__).resolve().parents[2] / "fixtures/ras/drain-scenario.yaml"
MiB = 1 << 20
POLICY = "interval: 1s\nras: {drain: {rate: 64MiB, reserve: 64MiB}}\n"


def metric(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_scripted_errors_degrade_then_drain_the_cxl_node(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    rt, loop = build(Settings(backend="emulated", scenario=str(SCENARIO), config=str(policy), seed=1))
    d = Daemon(rt, loop, Options(), clock=FakeClock())
    assert isinstance(d.clock, FakeClock)
    cxl_used: list[int] = []
    try:
        loop.start()
        for t in range(40):
            d.clock.t = float(t)
            d._tick()
            total, free = loop.last.usage[2] if loop.last else (0, 0)
            cxl_used.append(total - free)
            if t == 8:
                assert d.snapshot and d.snapshot.ras and d.snapshot.ras.nodes == {2: "degraded"}
                assert loop.avoid == {2}
            if t == 20:
                assert d.reload().ok  # SIGHUP's path: the RAS state outlives it
        snap = d.snapshot
        assert snap is not None and snap.ras is not None
        ras = status_json(snap)["ras"]
    finally:
        d._shutdown()
    assert ras["memdevs"]["mem0"]["state"] == "failing" and ras["memdevs"]["mem0"]["poison_records"] == 1
    assert "uncorrectable cxl_general_media" in ras["memdevs"]["mem0"]["cause"]
    assert ras["nodes"] == {"2": "failing"} and ras["avoided_nodes"] == [2]
    drain = ras["drains"]["2"]
    assert drain["status"] == "done" and drain["remaining"] == 0
    assert drain["moved"] > 640 * MiB  # more than the first step's rate * max_step: several steps
    # at the rate: the first step moves rate * max_step (640 MiB), each later one about 64 MiB
    peak = max(cxl_used)
    assert cxl_used[-1] < 64 * MiB < peak
    firsts = [i for i in range(1, len(cxl_used)) if cxl_used[i] < cxl_used[i - 1] - 32 * MiB]
    assert len(firsts) >= 3, cxl_used
    assert any("degraded -> failing" in t for t in ras["transitions"])
    assert {"memdev": "mem0", "event": "cxl_general_media", "severity": "Failure", "count": 1} in ras["events"]
    text = live_status_text(status_json(snap))
    assert "Health (RAS): cxl trace events from tracefs instance" in text
    assert "node 2: failing (no placement into it)" in text and "drain of node 2: done" in text
    scrape = generate_latest(registry_for(lambda: snap)).decode()
    assert metric(scrape, "cxltierd_ras_node_state", node="2", state="failing") == 1
    assert metric(scrape, "cxltierd_ras_memdev_state", memdev="mem0", state="failing") == 1
    assert metric(scrape, "cxltierd_ras_drain_moved_bytes_total", node="2") == drain["moved"]
    assert metric(scrape, "cxltierd_ras_events_total", memdev="mem0", event="cxl_poison", severity="none") == 1
    assert metric(scrape, "cxltierd_ras_poison_records", memdev="mem0") == 1
