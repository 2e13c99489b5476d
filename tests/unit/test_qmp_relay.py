"""The lab's QMP relay (tests/lab/qmp_relay.py) against a fake QMP server on a unix socket."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("qmp_relay", ROOT / "tests/lab/qmp_relay.py")
assert spec and spec.loader
relay: Any = importlib.util.module_from_spec(spec)
spec.loader.exec_module(relay)


def fake_qemu(path: str, seen: list[dict[str, Any]]) -> threading.Thread:
    """A QMP server: greets, accepts qmp_capabilities, sends an event before each reply, echoes the command."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        f = conn.makefile("rw")
        f.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}) + "\n")
        f.flush()
        for line in f:
            cmd = json.loads(line)
            seen.append(cmd)
            f.write(json.dumps({"event": "SOMETHING", "data": {}}) + "\n")
            if cmd["execute"] == "bad":
                f.write(json.dumps({"error": {"class": "CommandNotFound", "desc": "no"}}) + "\n")
            else:
                f.write(json.dumps({"return": {"echo": cmd.get("arguments", {})}}) + "\n")
            f.flush()
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_requests_get_replies_and_are_removed(tmp_path: Path) -> None:
    sock = str(tmp_path / "qmp.sock")
    seen: list[dict[str, Any]] = []
    fake_qemu(sock, seen)
    qmp = relay.Qmp(relay.connect(sock, None, timeout=5).makefile("rw"))
    reqs = tmp_path / "requests"
    reqs.mkdir()
    inject = {"execute": "cxl-inject-poison", "arguments": {"path": "/machine/peripheral/cxl-vmem0", "start": 0}}
    (reqs / "1.req").write_text(json.dumps(inject))
    (reqs / "2.req").write_text(json.dumps({"execute": "bad"}))
    (reqs / "3.req").write_text("not json")
    (reqs / "4.req").write_text('{"arguments": {}}')
    assert relay.serve_once(qmp, reqs) == 4
    assert not list(reqs.glob("*.req")) and not list(reqs.glob("*.tmp"))
    rep = {p.stem: json.loads(p.read_text()) for p in reqs.glob("*.rep")}
    assert rep["1"] == {"return": {"echo": inject["arguments"]}}  # the event in between was skipped
    assert rep["2"]["error"]["class"] == "CommandNotFound"
    assert "not JSON" in rep["3"]["error"]["desc"] and "'execute'" in rep["4"]["error"]["desc"]
    assert [c["execute"] for c in seen] == ["qmp_capabilities", "cxl-inject-poison", "bad"]


def test_main_says_why_when_there_is_no_qemu(tmp_path: Path, capsys: Any) -> None:
    dead = 2**22 + 12345  # no such pid: the relay gives up at once
    assert relay.main([str(tmp_path / "none.sock"), str(tmp_path / "r"), "--pid", str(dead)]) == 1
    assert "qmp_relay:" in capsys.readouterr().err
