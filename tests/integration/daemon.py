"""A cxltierd daemon in a subprocess with a fake $NOTIFY_SOCKET, for integration tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


class Daemon:
    def __init__(
        self,
        tmp: Path,
        *args: str,
        watchdog_usec: int | None = None,
        env: dict[str, str] | None = None,
        control: str | None = None,
    ):
        self.tmp = tmp
        self.notify_path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.control = control or str(tmp / "ctl.sock")
        e = dict(os.environ, NOTIFY_SOCKET=self.notify_path, PYTHONUNBUFFERED="1", **(env or {}))
        if watchdog_usec:
            e["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = tmp / "daemon.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        cmd = [sys.executable, "-m", "cxltierd", "run", "--backend", "emulated", "--socket", self.control, *args]
        if "--listen" not in args:
            cmd += ["--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=e)
        self._stop = False
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")

    def wait_message(self, text: str, after: int = 0, timeout: float = 60.0) -> int:
        """Index of the first notify message at or after `after` that contains `text`."""

        def find():
            for i, (_, m) in enumerate(self.messages[after:], start=after):
                if text in m:
                    return i + 1
            return 0

        return self.wait_for(find, timeout, f"notify {text!r}") - 1

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match:
        return self.wait_for(lambda: re.search(pattern, self.output()), timeout, f"log {pattern!r}")

    @property
    def port(self) -> int:
        return int(self.wait_log(r"metrics on http://(?:\[[^\]]+\]|[^:/]+):(\d+)/metrics").group(1))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stop = True
        self.thread.join(1)
        self.sock.close()
        self.log.close()
        return self.proc.returncode
