"""Logging to stderr in a form journald keeps well.

Under systemd (JOURNAL_STREAM or INVOCATION_ID set) each line starts with its syslog priority, "<6>", which
journald turns into the entry's priority, and carries no timestamp (journald adds one). Elsewhere: a timestamp
and the level name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

LEVELS = ("debug", "info", "warning", "error")
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a record with its syslog priority ("<6>" for info), which journald takes as its own."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record, each of its lines prefixed with "<priority>"."""
        text = super().format(record)
        prio = PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """True when stderr goes to systemd (JOURNAL_STREAM or INVOCATION_ID set)."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def setup(level: str = "info", environ: Mapping[str, str] | None = None) -> None:
    """Log the "cxltierd" logger at `level` and above to stderr: journald's form under systemd, else timestamped."""
    handler = logging.StreamHandler(sys.stderr)
    if under_systemd(environ):
        handler.setFormatter(JournalFormatter("%(levelname)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("cxltierd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
