"""What this kernel's DAMON can do, found by asking it: DAMOS actions, filter types and quota-goal metrics whose
names the sysfs files accept, and the files newer kernels add (intervals_goal, refresh_ms, core/ops filters).

The probe builds one scratch kdamond (context, scheme, filter, goal) while DAMON's sysfs holds no kdamond, writes
each candidate name and keeps those not refused with EINVAL, then removes the scratch kdamond. It never runs a
kdamond and never touches kdamonds that exist. Where it cannot ask (DAMON in use, no DAMON sysfs, a fixture tree
whose files do not react), `DamonFeatures.probed` is False and callers fall back to the kernel version.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass
from pathlib import Path

from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS

KDAMONDS = "/sys/kernel/mm/damon/admin/kdamonds"
ACTIONS = ("migrate_hot", "migrate_cold", "stat", "pageout", "lru_prio", "lru_deprio")
FILTERS = ("anon", "memcg", "young", "addr", "target", "hugepage_size", "unmapped", "active")
GOAL_METRICS = (
    "user_input",
    "some_mem_psi_us",
    "node_mem_used_bp",
    "node_mem_free_bp",
    "node_memcg_used_bp",
    "node_memcg_free_bp",
    "active_mem_bp",
)


@dataclass(frozen=True)
class DamonFeatures:
    """DAMON features the kernel accepted (empty and probed=False when it could not be asked)."""

    probed: bool = False
    why_not: str = ""  # when not probed
    actions: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    goal_metrics: tuple[str, ...] = ()
    intervals_goal: bool = False  # monitoring_attrs/intervals_goal: aggregation-interval auto-tuning (6.15)
    refresh_ms: bool = False  # kdamond refresh_ms: the kernel refreshes stats itself (6.17)
    core_ops_filters: bool = False  # scheme core_filters/ops_filters directories (6.15)

    def names(self) -> tuple[str, ...]:
        """Every feature as one word, for `doctor` and `status`."""
        out = [*self.actions, *(f"filter:{f}" for f in self.filters), *(f"goal:{m}" for m in self.goal_metrics)]
        out += [n for n, on in (("intervals_goal", self.intervals_goal), ("refresh_ms", self.refresh_ms)) if on]
        return tuple(out + (["core_ops_filters"] if self.core_ops_filters else []))


def _accepted(fs: HostFS, path: str, value: str) -> bool | None:
    """True if the kernel took the write, False if it refused the value (EINVAL), None for any other failure."""
    try:
        fs.write(path, value)
    except HostFSError as e:
        return False if e.errno == errno.EINVAL else None
    return True


def probe(fs: HostFS, live: bool | None = None) -> DamonFeatures:
    """Ask the kernel (see the module docstring). Never raises for a host problem: says why it could not ask.

    `live`: whether fs is the running kernel's sysfs (default: its root is /). A --root tree is never written to.
    """
    if not (fs.root == Path("/") if live is None else live):
        return DamonFeatures(why_not=f"not the running kernel ({fs.root})")
    nr = f"{KDAMONDS}/nr_kdamonds"
    try:
        if fs.read(nr) != "0":
            return DamonFeatures(why_not="DAMON sysfs holds kdamonds (not probed while in use)")
    except HostFSError:
        return DamonFeatures(why_not="no DAMON sysfs")
    k = f"{KDAMONDS}/0"
    try:
        fs.write(nr, "1")
        fs.write(f"{k}/contexts/nr_contexts", "1")
        ctx = f"{k}/contexts/0"
        fs.write(f"{ctx}/schemes/nr_schemes", "1")
        scheme = f"{ctx}/schemes/0"
        if not fs.exists(f"{scheme}/action"):
            return DamonFeatures(why_not="DAMON sysfs did not create a scheme (not a live kernel)")
        actions = tuple(a for a in ACTIONS if _accepted(fs, f"{scheme}/action", a))
        filters: tuple[str, ...] = ()
        if _accepted(fs, f"{scheme}/filters/nr_filters", "1"):
            filters = tuple(f for f in FILTERS if _accepted(fs, f"{scheme}/filters/0/type", f))
        metrics: tuple[str, ...] = ()
        goals = f"{scheme}/quotas/goals"
        if fs.exists(f"{goals}/nr_goals") and _accepted(fs, f"{goals}/nr_goals", "1"):
            if fs.exists(f"{goals}/0/target_metric"):
                metrics = tuple(m for m in GOAL_METRICS if _accepted(fs, f"{goals}/0/target_metric", m))
            else:
                metrics = ("user_input",)  # 6.8: goals without a metric file take user input only
        return DamonFeatures(
            probed=True,
            actions=actions,
            filters=filters,
            goal_metrics=metrics,
            intervals_goal=fs.exists(f"{ctx}/monitoring_attrs/intervals_goal"),
            refresh_ms=fs.exists(f"{k}/refresh_ms"),
            core_ops_filters=fs.exists(f"{scheme}/core_filters"),
        )
    except HostFSError as e:
        return DamonFeatures(why_not=f"probe failed: {e}")
    finally:
        with contextlib.suppress(HostFSError):
            if fs.read(nr) == "1":
                fs.write(nr, "0")
