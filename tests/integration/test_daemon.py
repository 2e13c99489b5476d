"""The daemon in a subprocess on the emulated backend: sd_notify, watchdog, reload (good and bad), stop, control
socket, /metrics and /healthz, scripted hotplug."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cxltierd import __version__
from cxltierd.service.control import request
from tests.integration.daemon import Daemon

GOOD = "interval: 300ms\nrate_limit: {mb_per_s: 2048}\n"


@pytest.fixture
def daemon(tmp_path):
    started: list[Daemon] = []

    def start(*args: str, policy: str = GOOD, **kw) -> Daemon:
        (tmp_path / "policy.yaml").write_text(policy)
        d = Daemon(tmp_path, "--config", str(tmp_path / "policy.yaml"), *args, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def bodies(d: Daemon) -> list[str]:
    """Notify messages other than watchdog pings and STATUS-only updates, in order."""
    return [m for _, m in d.messages if m != "WATCHDOG=1" and not m.startswith("STATUS=")]


def test_notify_protocol_across_start_reload_and_stop(daemon, tmp_path):
    d = daemon(watchdog_usec=400_000)
    d.wait_message("READY=1")
    ready = bodies(d)[0].splitlines()
    assert ready[0] == "READY=1" and ready[1].startswith("STATUS=simulated engine on emulated host")
    d.wait_for(lambda: sum(m == "WATCHDOG=1" for _, m in d.messages) >= 3, 10, "watchdog pings")
    pings = [t for t, m in d.messages if m == "WATCHDOG=1"]
    assert max(b - a for a, b in itertools.pairwise(pings)) < 0.4  # at most WATCHDOG_USEC apart

    # good reload: RELOADING=1 + MONOTONIC_USEC, then READY=1
    (tmp_path / "policy.yaml").write_text(GOOD + "cooldown: 10s\n")
    n = len(d.messages)
    d.signal(signal.SIGHUP)
    i = d.wait_message("RELOADING=1", after=n)
    reloading = d.messages[i][1].splitlines()
    assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
    assert abs(int(reloading[1].split("=")[1]) / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
    d.wait_message("READY=1", after=i)
    d.wait_log(r"reloaded policy .*policy.yaml")

    # broken reload: refused, old policy stays, still READY, visible in status
    (tmp_path / "policy.yaml").write_text("interval: 300ms\nrate_limt: 5\n")
    n = len(d.messages)
    d.signal(signal.SIGHUP)
    i = d.wait_message("RELOADING=1", after=n)
    d.wait_message("READY=1", after=i)
    d.wait_log(
        r"reload refused, old policy stays in force: .*policy.yaml: "
        r"rate_limt: unknown key 'rate_limt' \(did you mean 'rate_limit'\?\)"
    )
    status = request(d.control, "status")["status"]
    assert status["last_reload"]["ok"] is False and "rate_limt" in status["last_reload"]["error"]
    assert status["reloads"] == {"success": 1, "failure": 1}
    assert status["policy"]["interval"] == pytest.approx(0.3)  # the last good policy

    # stop: STOPPING=1, exit 0, within 5 s
    n = len(d.messages)
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 5
    assert any(m == "STOPPING=1" for _, m in d.messages[n:])
    order = [b.splitlines()[0] for b in bodies(d)]
    assert order == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    assert "Traceback" not in d.output()


def test_watchdog_is_not_pinged_without_watchdog_usec(daemon):
    d = daemon()
    d.wait_message("READY=1")
    time.sleep(0.5)
    assert not any(m == "WATCHDOG=1" for _, m in d.messages)


def test_control_socket_status_reload_and_bad_requests(daemon, tmp_path):
    d = daemon()
    d.wait_message("READY=1")
    assert stat.S_IMODE(os.stat(d.control).st_mode) == 0o660
    status = request(d.control, "status")
    assert status["ok"]
    s = status["status"]
    assert s["source"] == "daemon" and s["engine"] == "simulated" and s["backend"] == "emulated"
    assert [t["tier"] for t in s["tiers"]] == ["ddr", "cxl"] and s["policy"]["sha256"]
    assert s["ticks"] >= 1 and s["last_tick"] is not None
    # the CLI's view of the same
    cli = subprocess.run(
        [sys.executable, "-m", "cxltierd", "status", "--socket", d.control], capture_output=True, text=True
    )
    assert cli.returncode == 0 and "simulated engine on the emulated host" in cli.stdout
    # reload through the socket: ok, then a broken file refused with its error (exit 1)
    ok = subprocess.run(
        [sys.executable, "-m", "cxltierd", "reload", "--socket", d.control], capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stdout.startswith("reloaded ")
    (tmp_path / "policy.yaml").write_text("interval: -1\n")
    bad = subprocess.run(
        [sys.executable, "-m", "cxltierd", "reload", "--socket", d.control], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "reload refused" in bad.stderr and "interval" in bad.stderr

    def raw(payload: bytes) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(d.control)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            return json.loads(s.makefile().read())

    assert "not JSON" in raw(b"hello\n")["error"]
    assert "unknown command" in raw(b'{"command": "format-disk"}\n')["error"]
    assert 'like {"command"' in raw(b"[1,2]\n")["error"]
    assert "larger than" in raw(b"x" * 70000)["error"]
    # a client that never finishes its request is cut off; the server keeps answering
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(d.control)
        s.sendall(b'{"command": ')
        assert "not complete" in json.loads(s.makefile().read())["error"]
    assert request(d.control, "status")["ok"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_reload_refused_for_other_uids(daemon):
    public = Path(tempfile.mkdtemp(prefix="cxltierd-ctl-"))  # a directory uid 65534 can reach
    try:
        os.chmod(public, 0o755)
        _reload_refused_for_other_uids(daemon(control=str(public / "ctl.sock")))
    finally:
        shutil.rmtree(public, ignore_errors=True)


def _reload_refused_for_other_uids(d: Daemon) -> None:
    d.wait_message("READY=1")
    os.chmod(d.control, 0o666)
    code = (
        "import os, sys, json, socket; from cxltierd.service.control import request;"  # import before dropping to nobody
        "os.setgid(65534); os.setuid(65534);"
        f"print(request({d.control!r}, 'reload')['error']); print(request({d.control!r}, 'status')['ok'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["reload refused: uid 65534 is neither root nor the daemon's uid", "True"]


def scrape(url: str) -> tuple[str, list[Sample]]:
    """GET /metrics: the exposition text and its samples, parsed by prometheus_client's text-format parser."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return text, [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def having(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    """The samples of `name` whose labels include these."""
    return [s for s in samples if s.name == name and labels.items() <= s.labels.items()]


def test_metrics_and_healthz(daemon):
    """The one test of the exposition itself: a real scrape, parsed as Prometheus text and checked by promtool."""
    d = daemon()
    d.wait_message("READY=1")
    base = f"http://127.0.0.1:{d.port}"
    text, samples = scrape(base + "/metrics")
    for name, labels in (
        ("cxltierd_build_info", {"version": __version__}),
        ("cxltierd_tier_memory_total_bytes", {"tier": "ddr"}),
        ("cxltierd_node_memory_free_bytes", {"node": "0"}),
        ("cxltierd_cxl_memdev_info", {}),
        ("cxltierd_cxl_region_size_bytes", {"region": "region0"}),
        ("cxltierd_loop_duration_seconds_bucket", {}),
        ("cxltierd_last_tick_timestamp_seconds", {}),
        ("cxltierd_kernel_pgmigrate_success_total", {}),
        ("cxltierd_fast_tier_access_ratio", {}),
        ("cxltierd_hot_bytes", {"tier": "cxl"}),
    ):
        assert having(samples, name, **labels), (name, labels)
    assert "firmware_version" in having(samples, "cxltierd_cxl_memdev_info")[0].labels
    assert "le" in having(samples, "cxltierd_loop_duration_seconds_bucket")[0].labels
    for name, labels, want in (
        ("cxltierd_node_info", {"kind": "cxl", "node": "2", "rank": "1", "tier": "cxl"}, 1),
        ("cxltierd_cxl_region_info", {"mode": "ram", "node": "2", "region": "region0"}, 1),
        ("cxltierd_policy_reloads_total", {"result": "failure"}, 0),
        ("cxltierd_policy_last_reload_success", {}, 1),
        ("cxltierd_topology_changes_total", {}, 0),
        ("cxltierd_engine_info", {"backend": "emulated", "engine": "simulated"}, 1),
    ):
        assert [s.value for s in samples if s.name == name and s.labels == labels] == [pytest.approx(want)], name
    d.wait_for(
        lambda: having(scrape(base + "/metrics")[1], "cxltierd_migrated_bytes_total"),
        30,
        "a migration",
    )
    _, later = scrape(base + "/metrics")  # the emulated host's scenario tracks 2 MiB regions
    assert having(later, "cxltierd_heat_regions")[0].value > 0
    assert having(later, "cxltierd_heat_region_bytes")[0].value == 2 << 20
    health = urllib.request.urlopen(base + "/healthz", timeout=10)
    assert health.status == 200 and health.read().startswith(b"ok: tick ")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(base + "/nope", timeout=10)
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


HOTPLUG = """
name: hotplug
duration: 100
interval: 1
host: default
nodes: {0: 1GiB, 1: 1GiB, 2: 4GiB}
processes:
  - name: app
    size: 1536MiB
    placement: interleave
    phases: [{pattern: zipf, skew: 1.0, rate: 100000}]
events:
  - {at: 3, remove_node: 2}
  - {at: 8, add_node: 2}
"""


def test_scripted_hotplug_node_goes_and_comes_back(daemon, tmp_path):
    (tmp_path / "hotplug.yaml").write_text(HOTPLUG)
    d = daemon("--scenario", str(tmp_path / "hotplug.yaml"), "--fake-clock", policy="interval: 1s\n")
    d.wait_log(r"topology changed after \d+ event\(s\): node 2 \(cxl\) gone")
    d.wait_log(r"topology changed after \d+ event\(s\): node 2 \(cxl\) appeared", timeout=120)
    out = d.output()
    assert "hotplug: node remove node2" in out and "hotplug: dax remove dax0.0" in out
    assert "hotplug: cxl remove region0" in out and "hotplug: node add node2" in out
    status = request(d.control, "status")["status"]
    assert status["counters"]["topology_changes"] == 2 and [t["tier"] for t in status["tiers"]] == ["ddr", "cxl"]
    assert d.proc.poll() is None and "Traceback" not in out


def test_sigterm_ends_the_emulated_daemon_within_the_documented_five_seconds(daemon, tmp_path):
    """STOP_WITHIN (5 s) covers the whole stop: engines, servers, and removing the emulated tree copy."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    d = daemon(env={"TMPDIR": str(tmp)})
    d.wait_message("READY=1")
    assert list(tmp.glob("cxltierd-emulated-*"))  # its private tree copy
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    code = d.proc.wait(30)
    took = time.monotonic() - started
    assert code == 0 and took < 5.0, (code, took)
    assert not list(tmp.glob("cxltierd-emulated-*"))  # removed at stop
