"""What an operator sees when the daemon cannot start as asked, and the exit codes scripts rely on."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import pytest

from cxltierd.service.control import ControlError, ControlServer
from tests.integration.daemon import Daemon

RUN = [sys.executable, "-m", "cxltierd", "run", "--backend", "emulated", "--once"]


def cxltierd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxltierd", *args], capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_a_metrics_port_already_taken_ends_the_start_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cxltierd(*RUN[3:], "--listen", f"127.0.0.1:{port}", "--socket", "off")
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == [
        f"cxltierd: error: --listen 127.0.0.1:{port}: cannot serve /metrics (Address already in use); "
        "use another address or --listen off"
    ]
    assert "Traceback" not in r.stderr and "tick 1" not in r.stderr  # no tick ran


def test_an_address_that_cannot_be_bound_ends_the_start(tmp_path):
    r = cxltierd(*RUN[3:], "--listen", "192.0.2.1:9750", "--socket", "off")  # TEST-NET-1: not on this host
    assert r.returncode == 2
    (line,) = error_lines(r.stderr)
    assert line.startswith("cxltierd: error: --listen 192.0.2.1:9750: cannot serve /metrics (")
    off = cxltierd(*RUN[3:], "--listen", "off", "--socket", "off")
    assert off.returncode == 0, off.stderr


def test_metrics_on_ipv6_loopback(tmp_path):
    d = Daemon(tmp_path, "--listen", "[::1]:0")
    try:
        port = d.port
        assert f"metrics on http://[::1]:{port}/metrics" in d.output()
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10) as r:
            assert b"cxltierd_build_info" in r.read()
    finally:
        d.stop()


def test_status_without_a_daemon_prints_a_discovery_and_exits_3(tmp_path):
    r = cxltierd("status", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 3, r.stderr
    assert "showing a fresh discovery instead" in r.stderr and r.stdout.strip()
    as_json = cxltierd("status", "--json", "--socket", str(tmp_path / "none.sock"))
    assert as_json.returncode == 3 and '"source": "discovery"' in as_json.stdout
    assert "3 no daemon answered" in " ".join(cxltierd("status", "--help").stdout.split())


def test_a_socket_in_a_missing_directory_is_an_error_not_created(tmp_path):
    path = tmp_path / "missing" / "ctl.sock"
    r = cxltierd(*RUN[3:], "--listen", "off", "--socket", str(path))
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"cxltierd: error: --socket {path}: directory {path.parent} does not exist (create it, or use --socket off)"
    ]
    assert not path.parent.exists()
    with pytest.raises(ControlError, match="does not exist"):
        ControlServer(str(path), {}).start()
    assert not path.parent.exists()


def test_a_manual_run_makes_its_own_runtime_directory(tmp_path, monkeypatch):
    """The default socket's directory (/run/cxltierd, what the unit's RuntimeDirectory= makes) is the daemon's own:
    a manual run (the README's quick start) creates it 0750; any other missing directory stays an error."""
    from click.testing import CliRunner

    from cxltierd import cli

    own = tmp_path / "run-cxltierd" / "cxltierd.sock"
    monkeypatch.setattr(cli, "DEFAULT_SOCKET", str(own))
    args = ["run", "--backend", "emulated", "--once", "--fake-clock", "--listen", "off", "--socket", str(own)]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert own.parent.is_dir() and (own.parent.stat().st_mode & 0o777) == 0o750
