"""`cxltierd top`: the live view's loop: asks the daemon for its status every interval over the control socket and
redraws the terminal with plain ANSI escapes (cursor home, clear); `q` quits. The screen is report.top's."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from cxltierd.report.top import top_lines
from cxltierd.service.control import ControlError, request

CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen
HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (OSError, ValueError):  # no real stdin (closed, or a test's stand-in)
        return None


@contextlib.contextmanager
def _keys(fd: int | None) -> Iterator[None]:
    """Single keys without Enter and without echo while the view runs, when stdin is a terminal."""
    if fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _key(fd: int | None, timeout: float) -> str | None:
    """The next key typed within `timeout` seconds, or None; without stdin, or at its end, it just waits."""
    if fd is None:
        time.sleep(timeout)
        return None
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return None
    data = os.read(fd, 1)
    if not data:
        time.sleep(timeout)
        return None
    return data.decode(errors="replace")


def run_top(
    socket_path: str,
    interval: float,
    once: bool = False,
    out: TextIO = sys.stdout,
    fd: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Draw the view until `q` (or once); 0, or 3 with `once` when no daemon answered."""
    fd = _stdin_fd() if fd is None else fd
    before: dict[str, Any] | None = None
    at = 0.0
    with _keys(fd):
        out.write(HIDE)
        try:
            while True:
                width = shutil.get_terminal_size((100, 40)).columns
                try:
                    reply = request(socket_path, "status", timeout=max(interval, 2.0))
                    if not reply.get("ok"):
                        raise ControlError(f"daemon: {reply.get('error')}")
                except ControlError as e:
                    lines, doc = [f"cxltierd top: {e}; retrying every {interval:g}s", "", "q quits"], None
                else:
                    doc, now = reply["status"], clock()
                    lines = top_lines(doc, before, now - at if before else 0.0, width)
                    before, at = doc, now
                out.write(CLEAR + "\n".join(lines) + "\n")
                out.flush()
                if once:
                    return 0 if doc is not None else 3
                if (_key(fd, interval) or "").lower() == "q":
                    return 0
        finally:
            out.write(SHOW)
            out.flush()
