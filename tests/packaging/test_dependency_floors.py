"""The runtime dependencies' declared floors (pyproject.toml) are versions Debian 12 ships and cxltierd works with:
each Debian python3 module is at least the floor, prometheus-client's floor is Debian 12's own 0.16, and the daemon
run by Debian's python3 with Debian's modules serves /metrics that promtool accepts."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path("/usr/bin/python3")
DEBIAN_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONPATH": str(REPO), "PYTHONNOUSERSITE": "1"}


def floors() -> dict[str, tuple[int, ...]]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([\d.]+)", dep.split(";")[0].strip())
        assert m, f"{dep}: a runtime dependency needs a floor (NAME>=VERSION)"
        out[m.group(1)] = tuple(int(x) for x in m.group(2).split("."))
    return out


def debian_version(dist: str) -> tuple[int, ...]:
    if not PYTHON.exists():
        pytest.fail("Debian's /usr/bin/python3 is missing: apt-get install python3")
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    proc = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, env=DEBIAN_ENV, timeout=60)
    assert proc.returncode == 0, (
        f"{dist} not installed for /usr/bin/python3 (apt-get install python3-...): {proc.stderr}"
    )
    return tuple(int(x) for x in re.findall(r"\d+", proc.stdout)[:3])


def test_debian_12_meets_every_floor_and_prometheus_floor_is_debians() -> None:
    found = floors()
    assert set(found) == {"psutil", "pyudev", "prometheus-client", "click", "pyyaml"}
    for dist, floor in found.items():
        have = debian_version(dist)
        assert have[: len(floor)] >= floor, f"Debian ships {dist} {have}, below the declared floor {floor}"
    assert found["prometheus-client"] == debian_version("prometheus-client")[:2] == (0, 16)


def test_metrics_work_with_debians_prometheus_client(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(PYTHON), "-m", "cxltierd", "run", "--backend", "emulated", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--socket", "off", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=DEBIAN_ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "cxltierd_tier_memory_total_bytes" not in text:
            time.sleep(0.5)
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue
        assert 'cxltierd_tier_memory_total_bytes{tier="cxl"}' in text, text[-2000:]
        code = "import prometheus_client; print(prometheus_client.__file__)"
        where = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, env=DEBIAN_ENV, timeout=60)
        assert where.stdout.startswith("/usr/lib/python3/dist-packages/"), where.stdout  # Debian's, not the venv's
        promtool = shutil.which("promtool")
        assert promtool, "promtool missing: apt-get install prometheus"
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
