"""Hostile or unlucky clients of the control socket and the metrics port, on real sockets: no file descriptors
left, idle connection floods, slow senders, a full backlog. The servers keep answering and stay within bounds."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from cxltierd.service import control, metrics
from cxltierd.service.control import ControlServer, request
from cxltierd.service.metrics import MetricsServer

REPO = Path(__file__).resolve().parents[2]

# Both servers in a process that then uses up its file descriptors (RLIMIT_NOFILE lowered to 64), waits for "free",
# closes them, and reports the CPU time it spent while it had none left.
EXHAUSTED = textwrap.dedent(
    """
    import logging, os, resource, sys, time
    from prometheus_client import CollectorRegistry
    from cxltierd.service.control import ControlServer
    from cxltierd.service.metrics import MetricsServer
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    ctl = ControlServer(sys.argv[1], {"status": lambda request, peer: {"ok": True, "status": "fine"}})
    ctl.start()
    web = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ok"))
    web.start()
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print(web.port, flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    sys.stdin.readline()
    cpu = time.process_time() - cpu
    for fd in held:
        os.close(fd)
    print(f"{cpu:.3f}", flush=True)
    sys.stdin.readline()
    """
)


def test_servers_survive_running_out_of_file_descriptors(tmp_path):
    path = str(tmp_path / "ctl.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", EXHAUSTED, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        port = int(proc.stdout.readline())
        # Both servers now fail to accept (EMFILE): a control request and a scrape wait in the backlogs.
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(path)
        client.sendall(b'{"command": "status"}\n')
        scrape = socket.create_connection(("127.0.0.1", port), timeout=10)
        scrape.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        proc.stdin.write("start\n")
        proc.stdin.flush()
        time.sleep(1.0)
        proc.stdin.write("free\n")
        proc.stdin.flush()
        cpu = float(proc.stdout.readline())
        assert cpu < 0.5, f"{cpu} s of CPU in 1 s without file descriptors: spinning on accept"
        # Once descriptors are back, both answer the clients that waited, and new ones.
        assert json.loads(client.recv(4096)) == {"ok": True, "status": "fine"}
        assert scrape.recv(4096).startswith(b"HTTP/1.0 200")
        assert request(path, "status", timeout=5) == {"ok": True, "status": "fine"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=10)
    # one line per run of failures, not one per try
    assert err.count("control: accept failed (Too many open files)") == 1, err
    assert err.count("metrics: accept failed (Too many open files)") == 1, err
    assert "Traceback" not in err


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_idle_http_connections_are_capped_and_closed_after_the_deadline():
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ok"), deadline=1.5)
    server.start()
    threads, fds = threading.active_count(), fd_count()
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.5)  # let the server accept them all
        held = fd_count() - fds - len(idle)
        assert held <= metrics.MAX_CONNECTIONS + 2, f"server holds {held} connections"
        assert threading.active_count() - threads <= metrics.MAX_CONNECTIONS
        # a scrape now is refused at once (503), not left hanging
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert e.value.code == 503 and time.monotonic() - started < 2
        # after the deadline the idle connections are closed by the server, and scrapes are served again
        time.sleep(1.5)
        assert idle[0].recv(100) == b""
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200 and r.read() == b"ok\n"
    finally:
        for s in idle:
            s.close()
        server.stop()


@pytest.fixture
def control_server(tmp_path):
    path = str(tmp_path / "ctl.sock")
    server = ControlServer(path, {"status": lambda request, peer: {"ok": True}})
    server.start()
    yield server
    server.stop()


def test_a_slow_sender_is_answered_within_the_timeout(control_server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(control_server.path)
        s.settimeout(0.05)
        started = time.monotonic()
        reply = b""
        while not reply and time.monotonic() - started < 3 * control.TIMEOUT:
            s.send(b" ")  # a byte every 0.3 s: each read comes well within the timeout
            try:
                reply = s.recv(4096)
            except TimeoutError:
                time.sleep(0.25)
        took = time.monotonic() - started
    assert json.loads(reply) == {"ok": False, "error": f"request not complete within {control.TIMEOUT:g} s"}
    assert took < control.TIMEOUT + 1


def test_connections_beyond_the_cap_get_busy_at_once(control_server):
    idle = []
    try:
        for _ in range(control.MAX_CLIENTS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(control_server.path)
            idle.append(s)
        time.sleep(0.3)
        started = time.monotonic()
        reply = request(control_server.path, "status", timeout=5)
        assert reply["ok"] is False and reply["error"].startswith("busy:") and time.monotonic() - started < 1
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert request(control_server.path, "status", timeout=5) == {"ok": True}


def test_client_waits_while_the_backlog_is_full(tmp_path):
    path = str(tmp_path / "full.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued = []
    for _ in range(3):  # fill the backlog: the next connect() fails with EAGAIN
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            break
        queued.append(s)

    def serve_later() -> None:
        time.sleep(0.5)
        for _ in range(len(queued) + 1):
            conn, _ = listener.accept()
            with conn:
                if conn.recv(4096):
                    conn.sendall(b'{"ok": true}\n')

    t = threading.Thread(target=serve_later, daemon=True)
    t.start()
    for s in queued:
        s.close()
    assert request(path, "status", timeout=5) == {"ok": True}
    listener.close()


@pytest.mark.parametrize("kind", ["file", "symlink", "directory"])
def test_socket_path_naming_something_else_is_left_alone(tmp_path, kind):
    path = tmp_path / "ctl.sock"
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    if kind == "file":
        path.write_text("keep me\n")
    elif kind == "symlink":
        path.symlink_to(target)
    else:
        path.mkdir()
    server = ControlServer(str(path), {})
    with pytest.raises(control.ControlError, match=r"ctl.sock: exists and is not a socket \(not removing it\)"):
        server.start()
    assert target.read_text() == "keep me\n"
    assert path.is_dir() if kind == "directory" else path.read_text() == "keep me\n"


def test_a_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing answers
    server = ControlServer(str(path), {"status": lambda request, peer: {"ok": True}})
    server.start()
    try:
        assert request(str(path), "status", timeout=5) == {"ok": True}
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"command": "status", "n": ' + b"9" * 5000 + b"}\n", "request is not JSON: Exceeds the limit (4300 digits)"),
        (b"[" * 60000 + b"\n", "request is not JSON: "),
    ],
)
def test_requests_json_cannot_parse_get_a_plain_error(control_server, raw, expected):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(control_server.path)
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        reply = json.loads(s.recv(65536))
    assert reply["ok"] is False and reply["error"].startswith(expected) and "internal" not in reply["error"]


class _Big:
    """A collector whose exposition is about a megabyte, so a reply is still being written when the client resets."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily("big", "Big.", labels=["i"])
        for i in range(20000):
            g.add_metric([f"label-{i:040d}"], i)
        yield g


def test_a_client_that_resets_mid_reply_is_no_traceback(capfd):
    registry = CollectorRegistry()
    registry.register(_Big())
    server = MetricsServer("127.0.0.1", 0, registry, lambda: (True, "ok"))
    server.start()
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            s.recv(1)
            s.close()
        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err


PLANTED = textwrap.dedent(
    """
    import os, socket, sys
    os.setgid(12345)
    os.setuid(12345)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sys.argv[1])
    s.listen(4)
    print("ready", flush=True)
    conn, _ = s.accept()
    conn.settimeout(5)
    print(repr(conn.recv(4096)), flush=True)
    conn.sendall(b'{"ok": true, "status": "forged"}\\n')
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a server as another uid")
def test_client_refuses_a_server_of_another_user():
    shared = Path(tempfile.mkdtemp(prefix="cxltierd-planted-"))  # pytest's tmp_path is closed to other users
    shared.chmod(0o777)
    path = str(shared / "ctl.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", PLANTED, path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        with pytest.raises(control.ControlError, match=r"ctl.sock: answered by uid 12345, neither root nor you"):
            request(path, "status", timeout=5)
        out, _ = proc.communicate(timeout=10)
        assert out == "b''\n"  # nothing was sent to it
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(shared, ignore_errors=True)
