"""sd_notify datagrams, journald log format, the metrics collector on odd snapshots, listen address parsing."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from cxltierd import __version__, logs
from cxltierd.facts import HostFacts, Memdev, Region
from cxltierd.service.metrics import parse_listen, registry_for
from cxltierd.service.notify import Notifier
from cxltierd.service.state import ReloadResult, Snapshot
from cxltierd.topology import Node, Tier, Topology

TOPO = Topology(
    nodes=(Node(0, "ddr", "t", total_bytes=100), Node(2, "cxl", "t", total_bytes=300)),
    tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (2,))),
)


def test_notifier_sends_datagrams_to_path_and_abstract_sockets(tmp_path):
    path = str(tmp_path / "n.sock")
    for address, env in ((path, path), (f"\0cxltierd-test-{os.getpid()}".encode(), f"@cxltierd-test-{os.getpid()}")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(address)
            n = Notifier({"NOTIFY_SOCKET": env, "WATCHDOG_USEC": "30000000"})
            assert n.enabled and n.watchdog_interval == pytest.approx(15.0)
            assert n.ready("up") and n.reloading() and n.stopping()
            assert s.recv(100) == b"READY=1\nSTATUS=up"
            assert s.recv(100).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
            assert s.recv(100) == b"STOPPING=1"


def test_notifier_is_quiet_without_systemd_and_survives_a_dead_socket(tmp_path):
    assert not Notifier({}).send("READY=1") and Notifier({}).watchdog_interval is None
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.ready("x") and n.errors == 1
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_journal_format_has_priorities_and_no_timestamps(capsys):
    logs.setup("debug", {"JOURNAL_STREAM": "8:123"})
    log = logging.getLogger("cxltierd")
    log.info("tick 1")
    log.warning("hot\nplug")
    err = capsys.readouterr().err.splitlines()
    assert err == ["<6>INFO: tick 1", "<4>WARNING: hot", "<4>plug"]
    logs.setup("info", {})
    log.debug("hidden")
    log.error("shown")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" ERROR shown") and line[:4].isdigit()


def samples(registry: CollectorRegistry) -> list[Sample]:
    """Every sample the registry collects (what a scrape would show), read through the registry."""
    return [sample for family in registry.collect() for sample in family.samples]


def test_collector_without_snapshot_and_with_odd_values():
    empty = registry_for(lambda: None)
    assert empty.get_sample_value("cxltierd_build_info", {"version": __version__}) == pytest.approx(1)
    assert [s.name for s in samples(empty)] == ["cxltierd_build_info"]
    odd = Snapshot(
        topology=TOPO,
        usage={0: (100, 40)},  # node 2 unplugged: no series for it
        facts=HostFacts(root="/", regions=(Region("region0", "/r"),), memdevs=(Memdev("mem0", "/m"),)),
        last_reload=ReloadResult(ok=False, time=0.0, error="bad"),
        tick_bucket_counts=(1,) * 12,
        ticks=1,
        kernel_counters={"pgmigrate_success": 5},
    )
    reg = registry_for(lambda: odd)
    assert reg.get_sample_value("cxltierd_node_memory_total_bytes", {"node": "0"}) == pytest.approx(100)
    assert reg.get_sample_value("cxltierd_node_memory_free_bytes", {"node": "0"}) == pytest.approx(40)
    per_node = ("cxltierd_node_info", "cxltierd_node_memory_total_bytes", "cxltierd_node_memory_free_bytes")
    assert [s.labels["node"] for s in samples(reg) if s.name in per_node] == ["0", "0", "0"]
    assert reg.get_sample_value("cxltierd_policy_last_reload_success") == pytest.approx(0)
    assert reg.get_sample_value("cxltierd_kernel_pgmigrate_success_total") == pytest.approx(5)
    region = {"mode": "", "node": "", "region": "region0"}
    assert reg.get_sample_value("cxltierd_cxl_region_info", region) == pytest.approx(1)
    assert reg.get_sample_value("cxltierd_cxl_region_size_bytes", {"region": "region0"}) == pytest.approx(0)
    memdev = {"memdev": "mem0", "serial": "", "host": "", "firmware_version": ""}
    assert reg.get_sample_value("cxltierd_cxl_memdev_info", memdev) == pytest.approx(1)
    # no process labels unless the policy asks
    assert not [s for s in samples(reg) if "pid" in s.labels or "comm" in s.labels]
    labelled = registry_for(lambda: Snapshot(topology=TOPO, process_bytes={(42, "vllm", "cxl"): 4096}))
    process = {"comm": "vllm", "pid": "42", "tier": "cxl"}
    assert labelled.get_sample_value("cxltierd_process_memory_bytes", process) == pytest.approx(4096)


def test_a_broken_snapshot_never_breaks_the_scrape():
    class Broken(Snapshot):
        def tier_usage(self):  # type: ignore[override]
            raise RuntimeError("boom")

    reg = registry_for(lambda: Broken(topology=TOPO))
    names = {s.name for s in samples(reg)}
    assert "cxltierd_build_info" in names and "cxltierd_engine_info" in names  # other families still there
    assert "cxltierd_node_memory_total_bytes" not in names  # the family group that raised is skipped whole
    engine = {"engine": "none", "backend": "emulated"}
    assert reg.get_sample_value("cxltierd_engine_info", engine) == pytest.approx(1)


@pytest.mark.parametrize(
    "text, want",
    [
        ("0.0.0.0:9750", ("0.0.0.0", 9750)),
        (":9100", ("0.0.0.0", 9100)),
        ("[::1]:9750", ("::1", 9750)),
        ("9750", ("0.0.0.0", 9750)),
    ],
)
def test_parse_listen(text, want):
    assert parse_listen(text) == want


def test_parse_listen_rejects_garbage():
    with pytest.raises(ValueError, match="expected \\[ADDRESS\\]:PORT"):
        parse_listen("localhost:http")


def test_daemon_usage_and_kernel_gates_are_exported_and_shown():
    from cxltierd.model import Gates
    from cxltierd.report.status import live_status_text
    from cxltierd.service.publish import self_usage
    from cxltierd.service.state import SelfUsage
    from cxltierd.service.status import status_json

    me = self_usage()
    assert me is not None and me.rss_bytes > 1 << 20 and me.threads >= 1 and me.open_fds >= 3 and me.cpu_seconds > 0
    snap = Snapshot(topology=TOPO, gates=Gates(promote=False, demote=True), self_usage=SelfUsage(12.5, 40 << 20, 3, 9))
    reg = registry_for(lambda: snap)
    assert reg.get_sample_value("cxltierd_kernel_gate", {"direction": "promote"}) == 0
    assert reg.get_sample_value("cxltierd_kernel_gate", {"direction": "demote"}) == 1
    assert reg.get_sample_value("cxltierd_daemon_cpu_seconds_total") == pytest.approx(12.5)
    assert reg.get_sample_value("cxltierd_daemon_resident_memory_bytes") == 40 << 20
    assert reg.get_sample_value("cxltierd_daemon_open_fds") == 9
    text = live_status_text(status_json(snap) | {"version": "x", "started": 0})
    assert "Kernel gates: promotion off, demotion on" in text and "Daemon: 12.5 s CPU, 40.0 MiB resident" in text
    # a cxltierd engine (no gates) exports no gate series
    assert (
        registry_for(lambda: Snapshot(topology=TOPO)).get_sample_value("cxltierd_kernel_gate", {"direction": "promote"})
        is None
    )


def test_heat_regions_and_chunk_size_are_exported_and_shown():
    from cxltierd.report.status import live_status_text
    from cxltierd.service.status import status_json

    snap = Snapshot(topology=TOPO, regions=8192, region_bytes=128 << 20)
    reg = registry_for(lambda: snap)
    assert reg.get_sample_value("cxltierd_heat_regions") == 8192
    assert reg.get_sample_value("cxltierd_heat_region_bytes") == 128 << 20
    text = live_status_text(status_json(snap) | {"version": "x", "started": 0})
    assert "heat in 8192 regions of up to 128.0 MiB" in text
    assert "heat in" not in live_status_text(status_json(Snapshot(topology=TOPO)) | {"version": "x", "started": 0})


def test_available_memory_is_exported_beside_free_memory():
    snap = Snapshot(topology=TOPO, usage={0: (100, 10), 2: (200, 150)}, available={0: 60, 2: 170})
    reg = registry_for(lambda: snap)
    assert reg.get_sample_value("cxltierd_node_memory_free_bytes", {"node": "0"}) == 10
    assert reg.get_sample_value("cxltierd_node_memory_available_bytes", {"node": "0"}) == 60
    assert reg.get_sample_value("cxltierd_node_memory_available_bytes", {"node": "2"}) == 170
