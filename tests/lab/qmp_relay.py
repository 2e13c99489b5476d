"""The lab's QMP relay, run on the host by tests/lab/run.sh: the guest cannot reach QEMU's QMP socket, so it drops
requests as files in the 9p share and this relay answers them.

    python3 qmp_relay.py QMP_SOCKET REQUEST_DIR [--pid QEMU_PID]

A request is `REQUEST_DIR/NAME.req`, one QMP command as JSON ({"execute": ..., "arguments": {...}}); the reply
(QEMU's {"return": ...} or {"error": ...}, or {"error": {"desc": ...}} from the relay) is written to NAME.rep
(through a temporary file and a rename, so the guest never reads half a reply) and the request is removed. QMP's
asynchronous events are skipped. The relay exits when QEMU (--pid) is gone or the socket closes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

POLL = 0.1


class Qmp:
    """One QMP connection in command mode."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        greeting = self.read()
        if "QMP" not in greeting:
            raise ConnectionError(f"not a QMP greeting: {greeting}")
        reply = self.command({"execute": "qmp_capabilities"})
        if "return" not in reply:
            raise ConnectionError(f"qmp_capabilities refused: {reply}")

    def read(self) -> dict[str, Any]:
        line = self.stream.readline()
        if not line:
            raise ConnectionError("QMP socket closed")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one command; its reply (events in between skipped)."""
        self.stream.write(json.dumps(request) + "\n")
        self.stream.flush()
        while True:
            reply = self.read()
            if "event" not in reply:
                return reply


def answer(qmp: Qmp, text: str) -> dict[str, Any]:
    """The reply to one request file's text; a request that is not a QMP command gets an error, not a crash."""
    try:
        request = json.loads(text)
    except ValueError as e:
        return {"error": {"class": "RelayError", "desc": f"request is not JSON: {e}"}}
    if not isinstance(request, dict) or not isinstance(request.get("execute"), str):
        return {"error": {"class": "RelayError", "desc": "request must be an object with an 'execute' string"}}
    return qmp.command({k: v for k, v in request.items() if k in ("execute", "arguments")})


def serve_once(qmp: Qmp, requests: Path) -> int:
    """Answer every waiting request; how many."""
    done = 0
    for req in sorted(requests.glob("*.req")):
        reply = answer(qmp, req.read_text())
        tmp = req.with_suffix(".tmp")
        tmp.write_text(json.dumps(reply) + "\n")
        os.replace(tmp, req.with_suffix(".rep"))
        req.unlink()
        done += 1
    return done


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect(path: str, pid: int | None, timeout: float = 120.0) -> socket.socket:
    """Connect once QEMU has made the socket."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline or not alive(pid):
                raise
            time.sleep(POLL)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("socket")
    ap.add_argument("requests", type=Path)
    ap.add_argument("--pid", type=int)
    a = ap.parse_args(argv)
    try:
        sock = connect(a.socket, a.pid)
        qmp = Qmp(sock.makefile("rw"))
    except (OSError, ConnectionError) as e:
        print(f"qmp_relay: {a.socket}: {e}", file=sys.stderr)
        return 1
    print(f"qmp_relay: connected to {a.socket}, serving {a.requests}", file=sys.stderr)
    try:
        while alive(a.pid):
            a.requests.mkdir(parents=True, exist_ok=True)  # the runner recreates the share on a boot retry
            if not serve_once(qmp, a.requests):
                time.sleep(POLL)
    except (OSError, ConnectionError) as e:
        print(f"qmp_relay: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
