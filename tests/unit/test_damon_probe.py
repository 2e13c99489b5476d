"""The DAMON feature probe: a scratch kdamond asks the kernel which names it accepts, and is removed again."""

from __future__ import annotations

import errno
from pathlib import Path

from cxltierd.engines.damon_probe import KDAMONDS, DamonFeatures, probe
from cxltierd.engines.registry import Env, probes
from cxltierd.errors import HostFSError
from cxltierd.facts import Damon, KernelFacts
from cxltierd.hostfs import HostFS


class Kernel(HostFS):
    """DAMON sysfs as a kernel of some version lays it out: nr_* files create children, names outside the
    kernel's lists are refused with EINVAL."""

    def __init__(self, root: Path, actions: set[str], filters: set[str], metrics: set[str] | None, newer: bool):
        super().__init__(root)
        self.actions, self.filters, self.metrics, self.newer = actions, filters, metrics, newer
        self.writes: list[tuple[str, str]] = []
        self._put(f"{KDAMONDS}/nr_kdamonds", "0")

    def _put(self, kpath: str, value: str) -> None:
        p = self.path(kpath)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value + "\n")

    def write(self, kpath: str, value: str) -> None:  # type: ignore[override]
        self.writes.append((kpath, value))
        name = kpath.rsplit("/", 1)[1]
        allowed = {"action": self.actions, "type": self.filters, "target_metric": self.metrics or set()}.get(name)
        if allowed is not None and value not in allowed:
            raise HostFSError(str(self.path(kpath)), "write failed (Invalid argument)", errno.EINVAL)
        self._put(kpath, value)
        base = kpath.rsplit("/", 1)[0]
        if name == "nr_kdamonds" and value == "1":
            self._put(f"{base}/0/state", "off")
            if self.newer:
                self._put(f"{base}/0/refresh_ms", "0")
        elif name == "nr_contexts" and value == "1":
            self._put(f"{base}/0/operations", "vaddr")
            if self.newer:
                self._put(f"{base}/0/monitoring_attrs/intervals_goal/access_bp", "0")
        elif name == "nr_schemes" and value == "1":
            self._put(f"{base}/0/action", "stat")
            self._put(f"{base}/0/filters/nr_filters", "0")
            if self.metrics is not None:
                self._put(f"{base}/0/quotas/goals/nr_goals", "0")
            if self.newer:
                self._put(f"{base}/0/core_filters/nr_filters", "0")
        elif name == "nr_goals" and value == "1" and self.newer:
            self._put(f"{base}/0/target_metric", "user_input")


def test_a_6_12_like_kernel(tmp_path):
    fs = Kernel(
        tmp_path,
        {"migrate_hot", "migrate_cold", "stat", "pageout"},
        {"anon", "memcg", "young", "addr", "target"},
        {"user_input", "some_mem_psi_us"},
        newer=False,
    )
    fs.newer = False
    f = probe(fs, live=True)
    assert f.probed and f.actions == ("migrate_hot", "migrate_cold", "stat", "pageout")
    assert f.filters == ("anon", "memcg", "young", "addr", "target")
    assert f.goal_metrics == ("user_input",)  # no target_metric file on this layout: user input only
    assert not (f.intervals_goal or f.refresh_ms or f.core_ops_filters)
    assert fs.read(f"{KDAMONDS}/nr_kdamonds") == "0" and fs.writes[-1] == (f"{KDAMONDS}/nr_kdamonds", "0")
    assert not any(p.endswith("/state") for p, _ in fs.writes)  # nothing was ever started


def test_a_newer_kernel_and_the_damos_probe_reading_it(tmp_path):
    fs = Kernel(
        tmp_path,
        {"migrate_hot", "migrate_cold", "stat"},
        {"anon", "memcg", "young", "addr", "hugepage_size"},
        {"user_input", "node_mem_used_bp", "node_mem_free_bp"},
        newer=True,
    )
    f = probe(fs, live=True)
    assert f.goal_metrics == ("user_input", "node_mem_used_bp", "node_mem_free_bp")
    assert f.intervals_goal and f.refresh_ms and f.core_ops_filters
    assert "goal:node_mem_used_bp" in f.names() and "intervals_goal" in f.names()
    k = KernelFacts(release="7.3.4", version=(7, 3), numa_balancing=0, damon=Damon(sysfs=True))
    assert probes(Env(k, damon=f))["damos"] is None
    # the same version whose DAMON refused migrate_cold: the probe's word beats the version
    no_cold = DamonFeatures(probed=True, actions=("migrate_hot",), filters=("young", "addr", "memcg"))
    assert "needs DAMOS migrate_cold" in (probes(Env(k, damon=no_cold))["damos"] or "")


def test_never_written_when_it_cannot_ask(tmp_path):
    busy = Kernel(tmp_path / "a", set(), set(), None, newer=False)
    busy._put(f"{KDAMONDS}/nr_kdamonds", "1")
    assert probe(busy, live=True) == DamonFeatures(why_not="DAMON sysfs holds kdamonds (not probed while in use)")
    fixture = Kernel(tmp_path / "b", set(), set(), None, newer=False)
    assert probe(fixture).why_not.startswith("not the running kernel") and fixture.writes == []
    assert probe(HostFS(tmp_path / "none"), live=True).why_not == "no DAMON sysfs"
