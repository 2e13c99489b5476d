"""The control socket: small JSON requests over a Unix stream socket, one request and one reply per connection.

Request: `{"command": "status"}` or `{"command": "reload"}` (one JSON object, at most MAX_REQUEST bytes, sent within
TIMEOUT seconds). Reply: one JSON object with "ok" and either the result or "error". Commands that change state
are accepted only from root or the daemon's own uid, checked with SO_PEERCRED. A bad request gets an error
reply; nothing a client sends can stop the server: at most MAX_CLIENTS connections are served at once (more get a
"busy" reply), reading a request and draining after the reply together take at most TIMEOUT, and an accept error
(no file descriptors left) is logged once and retried after a pause.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cxltierd.errors import CxltierdError

log = logging.getLogger("cxltierd.service.control")

DEFAULT_SOCKET = "/run/cxltierd/cxltierd.sock"
MAX_REQUEST = 64 * 1024
TIMEOUT = 2.0
MAX_CLIENTS = 32  # connections served at once
BACKLOG = 128
ACCEPT_PAUSE = 0.1  # seconds to wait after an accept error before the next try
PRIVILEGED = frozenset({"reload", "drain", "undrain"})


class ControlError(CxltierdError):
    """No daemon answered, or it answered with an error."""


@dataclass(frozen=True)
class Peer:
    """The connecting process's credentials (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


Handler = Callable[[dict[str, Any], Peer], dict[str, Any]]


def peer_of(conn: socket.socket) -> Peer:
    """The peer credentials of a connected Unix socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class ControlServer:
    """Serves `handlers` (command name -> function) on a Unix socket, one thread per connection."""

    def __init__(self, path: str, handlers: dict[str, Handler], mode: int = 0o660) -> None:
        self.path = path
        self.handlers = handlers
        self.mode = mode
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.owner_uid = os.getuid()
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.stopped = threading.Event()
        self.accept_errors = 0

    def start(self) -> None:
        """Bind the socket (refusing to replace anything but a stale socket) and start serving in a thread."""
        socket_dir_exists(self.path)
        try:
            try:
                mode = os.lstat(self.path).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None:
                if not stat.S_ISSOCK(mode):  # never delete what is not a stale socket (a file named by mistake)
                    raise ControlError(f"{self.path}: exists and is not a socket (not removing it)")
                if _answers(self.path):
                    raise ControlError(f"{self.path}: another cxltierd is already answering on this socket")
                os.unlink(self.path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.bind(self.path)
            os.chmod(self.path, self.mode)
            s.listen(BACKLOG)
        except OSError as e:
            raise ControlError(f"{self.path}: cannot open control socket ({e.strerror or e})") from None
        self.sock = s
        self.thread = threading.Thread(target=self._accept, name="control", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop accepting, close the socket and remove its path."""
        self.stopped.set()
        s, self.sock = self.sock, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
            try:
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass

    def _accept(self) -> None:
        failing = False  # in a run of accept errors (logged once per run)
        while (sock := self.sock) is not None:
            try:
                conn, _ = sock.accept()
            except OSError as e:
                if self.stopped.is_set():
                    return  # closed by stop()
                self.accept_errors += 1
                if not failing:
                    log.error("control: accept failed (%s): retrying every %g s", e.strerror or e, ACCEPT_PAUSE)
                failing = True
                self.stopped.wait(ACCEPT_PAUSE)
                continue
            if failing:
                log.info("control: accepting again")
                failing = False
            if not self.slots.acquire(blocking=False):
                _refuse(conn, f"busy: {MAX_CLIENTS} requests in progress, try again")
                continue
            try:
                threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()
            except RuntimeError as e:  # no thread can be started
                self.slots.release()
                _refuse(conn, f"busy: {e}")

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                deadline = time.monotonic() + TIMEOUT
                try:
                    reply = self._handle(conn, deadline)
                except Exception as e:  # a handler bug must not kill the server
                    log.warning("control: request failed: %s", e)
                    reply = {"ok": False, "error": f"internal error: {e}"}
                with contextlib.suppress(OSError):
                    conn.settimeout(TIMEOUT)
                    conn.sendall((json.dumps(reply, default=str) + "\n").encode())
                    conn.shutdown(socket.SHUT_WR)
                    # Read what the client still sends (an oversized request): closing with unread data would reset
                    # the connection and lose the reply. Bounded by MAX_REQUEST in all and TIMEOUT in all.
                    deadline = time.monotonic() + TIMEOUT
                    drained = 0
                    while drained < MAX_REQUEST and (chunk := _recv(conn, deadline)):
                        drained += len(chunk)
        finally:
            self.slots.release()

    def _handle(self, conn: socket.socket, deadline: float) -> dict[str, Any]:
        try:
            data = _read_request(conn, deadline)
        except TimeoutError:
            return {"ok": False, "error": f"request not complete within {TIMEOUT:g} s"}
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        try:
            request = json.loads(data)
        except (ValueError, RecursionError) as e:  # also an integer over 4300 digits, nesting too deep
            return {"ok": False, "error": f"request is not JSON: {str(e)[:200]}"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'request must be an object like {"command": "status"}'}
        command = request["command"]
        handler = self.handlers.get(command)
        if handler is None:
            return {
                "ok": False,
                "error": f"unknown command {command[:40]!r} (known: {', '.join(sorted(self.handlers))})",
            }
        peer = peer_of(conn)
        if command in PRIVILEGED and peer.uid not in (0, self.owner_uid):
            return {"ok": False, "error": f"{command} refused: uid {peer.uid} is neither root nor the daemon's uid"}
        return handler(request, peer)


def _recv(conn: socket.socket, deadline: float) -> bytes:
    """One recv that ends by `deadline` (TimeoutError after it), however slowly the client sends."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    conn.settimeout(left)
    return conn.recv(4096)


def _read_request(conn: socket.socket, deadline: float) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = _recv(conn, deadline)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError(f"request larger than {MAX_REQUEST} bytes")
    if not buf.strip():
        raise ValueError("empty request")
    return bytes(buf.split(b"\n", 1)[0])


def _refuse(conn: socket.socket, error: str) -> None:
    """Answer without reading the request (never blocks) and close."""
    with conn, contextlib.suppress(OSError):
        conn.send((json.dumps({"ok": False, "error": error}) + "\n").encode(), socket.MSG_DONTWAIT)


def _answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(path)
        return True
    except OSError:
        return False


def _connect(s: socket.socket, path: str, deadline: float) -> None:
    """connect(), tried again while the server's backlog is full (EAGAIN on a Unix socket) until `deadline`."""
    while True:
        try:
            s.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(errno.ETIMEDOUT, "the daemon's socket stayed busy") from None
            time.sleep(0.02)


def socket_dir_exists(path: str) -> None:
    """Raise ControlError unless the socket's directory exists: it is never created here (as root, with whatever
    mode and owner that gives); systemd's RuntimeDirectory= and the tmpfiles.d entry make /run/cxltierd."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ControlError(f"--socket {path}: directory {directory} does not exist (create it, or use --socket off)")


def request(path: str, command: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
    """Send one command to the daemon and return its reply. Raises ControlError when no daemon answers, or when
    what answers runs as neither root nor the caller (checked with SO_PEERCRED before anything is sent)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            _connect(s, path, time.monotonic() + timeout)
            server = peer_of(s)
            if server.uid not in (0, os.getuid()):  # a socket planted by another user: send it nothing
                raise ControlError(f"{path}: answered by uid {server.uid}, neither root nor you: not trusted")
            try:
                s.sendall((json.dumps({"command": command, **fields}) + "\n").encode())
                s.shutdown(socket.SHUT_WR)
            except BrokenPipeError:
                pass  # the daemon answered (busy) without reading: its reply is still there to read
            data = bytearray()
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionResetError:
                if not data:  # a busy daemon closes without reading the request: the reply came first
                    raise
    except FileNotFoundError:
        raise ControlError(f"{path}: no daemon (socket does not exist)") from None
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise ControlError(f"{path}: no daemon answers") from None
        raise ControlError(f"{path}: {e.strerror or e}") from None
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        raise ControlError(f"{path}: daemon sent a malformed reply") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: daemon sent a malformed reply")
    return reply
