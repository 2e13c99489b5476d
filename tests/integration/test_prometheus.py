"""A real Prometheus server (Debian package `prometheus`) scrapes the daemon on loopback; the test reads
cxltierd_tier_memory_total_bytes back through Prometheus' HTTP query API and compares it with `status`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from cxltierd.service.control import request
from tests.integration.daemon import Daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    doc = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.fixture
def prometheus(tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: apt-get install prometheus"
    procs = []

    def start(target_port: int) -> int:
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: cxltierd\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115
        )  # fmt: skip
        procs.append(proc)
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def test_prometheus_scrapes_the_daemon(tmp_path, prometheus):
    (tmp_path / "policy.yaml").write_text("interval: 500ms\n")
    d = Daemon(tmp_path, "--config", str(tmp_path / "policy.yaml"))
    try:
        d.wait_message("READY=1")
        prom = prometheus(d.port)
        deadline = time.monotonic() + 90
        series: list[dict] = []
        while time.monotonic() < deadline:
            try:
                series = query(prom, "cxltierd_tier_memory_total_bytes")
            except OSError:
                series = []
            if len(series) >= 2:
                break
            time.sleep(0.5)
        assert len(series) == 2, (tmp_path / "prometheus.log").read_text()
        got = {s["metric"]["tier"]: float(s["value"][1]) for s in series}
        status = request(d.control, "status")["status"]
        assert got == pytest.approx({t["tier"]: float(t["total_bytes"]) for t in status["tiers"]})
        assert all(s["metric"]["job"] == "cxltierd" for s in series)
        (up,) = query(prom, 'up{job="cxltierd"}')
        assert up["value"][1] == "1"
    finally:
        d.stop()
