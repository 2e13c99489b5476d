"""DAMON_STAT, the kernel's own DAMON-based memory statistics, and how the DAMON engines coexist with it.

Kernels built with CONFIG_DAMON_STAT (7.3 in Debian enables it by default) run one kdamond of their own. It is not a
sysfs kdamond (`nr_kdamonds` reads 0, so it is never reported as someone else's), but while it runs every sysfs
kdamond fails to start with EBUSY. It is switched at run time through the module parameter PARAM (Y or N).

DamonStat takes it over the way the NUMA-balancing engine takes over its knobs: where the policy allows it
(`damon.take_over_damon_stat`), take_over() records the old value in a state file and writes N; restore() writes the
recorded value back and removes the file. A value recorded by a crashed predecessor is ours too, so a restart still
restores it. Where the policy does not allow it and DAMON_STAT runs, blocker() says why the DAMON engines cannot run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS

PARAM = "/sys/module/damon_stat/parameters/enabled"
log = logging.getLogger("cxltierd")


def enabled(fs: HostFS) -> bool | None:
    """Is DAMON_STAT running? None when this kernel has no DAMON_STAT (or its parameter cannot be read)."""
    try:
        value = fs.read_optional(PARAM)
    except HostFSError:
        return None
    return None if value is None else value in ("Y", "y", "1")


class DamonStat:
    """DAMON_STAT's switch, taken over and given back; what was there before is kept in `state_file`."""

    def __init__(self, fs: HostFS, state_file: str | os.PathLike[str]) -> None:
        self.fs = fs
        self.state_file = Path(state_file)
        self.saved: str | None = self._recorded()

    def _recorded(self) -> str | None:
        try:
            doc = json.loads(self.state_file.read_text())
            return str(doc["enabled"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def blocker(self, allowed: bool) -> str | None:
        """Why the DAMON engines cannot run here, or None. Gives back a predecessor's take-over the policy no longer
        allows."""
        if not allowed:
            self.restore()
            if enabled(self.fs):
                return "the kernel's DAMON_STAT kdamond runs (damon_stat.enabled=Y) and damon.take_over_damon_stat is false"
        return None

    def take_over(self) -> str | None:
        """Turn DAMON_STAT off, remembering that it was on. Returns what was done (for the engine reason), None when
        there was nothing to do. Raises CxltierdError (one line) when the parameter cannot be written."""
        if self.saved is not None:
            return "DAMON_STAT kept off (cxltierd turned it off before a restart; restored on stop)"
        if not enabled(self.fs):
            return None
        self.saved = self.fs.read(PARAM)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"enabled": self.saved}))
        try:
            self.fs.write(PARAM, "N")
        except HostFSError as e:
            self.saved = None
            self.state_file.unlink(missing_ok=True)
            raise CxltierdError(f"cannot turn DAMON_STAT off: {e}") from None
        log.warning("the kernel's DAMON_STAT kdamond was running: turned it off (%s=N), restored on stop", PARAM)
        return "DAMON_STAT turned off while cxltierd runs (damon.take_over_damon_stat; restored on stop)"

    def restore(self) -> None:
        """Write back the value take_over() (or a crashed predecessor) recorded; nothing when none is recorded."""
        if self.saved is None:
            return
        try:
            self.fs.write(PARAM, self.saved)
        except HostFSError as e:
            raise CxltierdError(f"restoring DAMON_STAT: {e}") from None
        log.info("DAMON_STAT restored (%s=%s)", PARAM, self.saved)
        self.saved = None
        self.state_file.unlink(missing_ok=True)
