"""The numa_balancing engine's debugfs knobs: hot threshold and scan periods derived from the policy, set while it
runs, restored on stop (also by a successor after a crash), reported for status."""

from __future__ import annotations

import json
from pathlib import Path

from cxltierd.engines.numa_balancing import (
    DEMOTION,
    HOT_THRESHOLD,
    NUMA_BALANCING,
    RATE_LIMIT,
    SCAN_DELAY,
    SCAN_PERIOD_MAX,
    SCAN_PERIOD_MIN,
    SCAN_SIZE,
    NumaBalancingEngine,
    debugfs_values,
)
from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.policy.schema import build_policy
from cxltierd.topology import Node, Tier, Topology

TOPO = Topology(
    nodes=(Node(0, "ddr", "t", cpus=(0,)), Node(4, "cxl", "t")),
    tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (4,))),
)
KERNEL_DEFAULTS = {
    HOT_THRESHOLD: "1000",
    SCAN_DELAY: "1000",
    SCAN_PERIOD_MIN: "1000",
    SCAN_PERIOD_MAX: "60000",
    SCAN_SIZE: "256",
}


def host(root: Path, debugfs: bool = True) -> HostFS:
    fs = HostFS(root)
    knobs = {NUMA_BALANCING: "0", DEMOTION: "false", RATE_LIMIT: "65536"} | (KERNEL_DEFAULTS if debugfs else {})
    for path, value in knobs.items():
        fs.path(path).parent.mkdir(parents=True, exist_ok=True)
        fs.path(path).write_text(value + "\n")
    for n in (0, 4):
        fs.path(f"/sys/devices/system/node/node{n}").mkdir(parents=True)
        fs.path(f"/sys/devices/system/node/node{n}/vmstat").write_text("pgpromote_success 0\n")
    return fs


def knobs(fs: HostFS) -> dict[str, str]:
    return {p: fs.read(p) for p in KERNEL_DEFAULTS}


def test_debugfs_values_follow_interval_and_hot_threshold() -> None:
    """A scan pass (RUNS_PER_PASS = 32 runs) within the interval or the hot threshold, whichever is shorter."""
    one_s = {HOT_THRESHOLD: 4000, SCAN_DELAY: 1000, SCAN_PERIOD_MIN: 25, SCAN_PERIOD_MAX: 31, SCAN_SIZE: 64}
    assert debugfs_values(1.0, 0.25) == one_s
    assert debugfs_values(5.0, 1.0)[SCAN_PERIOD_MAX] == 31  # the policy defaults: the hot threshold (1 s) is shorter
    assert debugfs_values(5.0, 0.1)[SCAN_PERIOD_MAX] == 156  # the interval is shorter
    assert debugfs_values(5.0, 0.1)[SCAN_DELAY] == 5000
    assert debugfs_values(0.05, 100.0) == {
        HOT_THRESHOLD: 10,
        SCAN_DELAY: 25,
        SCAN_PERIOD_MIN: 25,
        SCAN_PERIOD_MAX: 25,  # never below the kernel's floor for 64 MB runs
        SCAN_SIZE: 64,
    }
    assert debugfs_values(600.0, 0.0)[SCAN_PERIOD_MAX] == 60000 // 32  # the hot threshold is capped at 60 s


def test_scan_periods_set_while_running_and_restored_on_stop(tmp_path: Path) -> None:
    fs = host(tmp_path)
    e = NumaBalancingEngine(fs, tmp_path / "run/nb.json")
    e.configure(TOPO, build_policy({"interval": "1s", "hotness": {"hot_threshold": 0.25}}))
    assert knobs(fs) == {
        HOT_THRESHOLD: "4000",
        SCAN_DELAY: "1000",
        SCAN_PERIOD_MIN: "25",
        SCAN_PERIOD_MAX: "31",
        SCAN_SIZE: "64",
    }
    assert e.live_uses() == ("hot_threshold_ms=4000", "scan_period_ms=25..31", "scan_delay_ms=1000", "scan_size_mb=64")
    recorded = json.loads((tmp_path / "run/nb.json").read_text())
    assert {p: recorded[p] for p in KERNEL_DEFAULTS} == KERNEL_DEFAULTS  # the old values, before any write
    e.configure(TOPO, build_policy({"interval": "3s", "hotness": {"hot_threshold": 0.25}}))  # a reload
    assert (fs.read(SCAN_PERIOD_MAX), fs.read(SCAN_DELAY)) == ("93", "3000")
    e.stop()
    assert knobs(fs) == KERNEL_DEFAULTS and e.live_uses() == ()
    assert not (tmp_path / "run/nb.json").exists()


def test_a_successor_restores_what_a_crashed_engine_set(tmp_path: Path) -> None:
    fs = host(tmp_path)
    NumaBalancingEngine(fs, tmp_path / "run/nb.json").configure(TOPO, build_policy({"interval": "1s"}))
    assert fs.read(SCAN_PERIOD_MAX) == "31"  # the first engine dies here without stop()
    after = NumaBalancingEngine(fs, tmp_path / "run/nb.json")
    after.configure(TOPO, build_policy({"interval": "2s"}))
    assert fs.read(SCAN_DELAY) == "1000"  # a pass within min(2000 ms, the hot threshold's 1000 ms)
    after.stop()
    assert knobs(fs) == KERNEL_DEFAULTS and fs.read(NUMA_BALANCING) == "0"


def test_without_debugfs_the_kernel_values_stay(tmp_path: Path) -> None:
    fs = host(tmp_path, debugfs=False)
    e = NumaBalancingEngine(fs, tmp_path / "run/nb.json")
    e.configure(TOPO, build_policy(None))
    assert fs.read(NUMA_BALANCING) == "2" and e.live_uses() == ()
    assert not fs.path(SCAN_PERIOD_MAX).exists()
    e.stop()


class NoScanWrites(HostFS):
    """debugfs readable, but the scan knobs refuse writes (as on a kernel that locks them down)."""

    def write(self, kpath: str, value: str) -> None:
        if "scan_" in kpath:
            raise HostFSError(kpath, "Operation not permitted")
        super().write(kpath, value)


def test_an_unwritable_scan_knob_is_left_alone_and_not_restored(tmp_path: Path) -> None:
    host(tmp_path)
    fs = NoScanWrites(tmp_path)
    e = NumaBalancingEngine(fs, tmp_path / "run/nb.json")
    e.configure(TOPO, build_policy({"hotness": {"hot_threshold": 0.5}}))
    assert fs.read(HOT_THRESHOLD) == "2000" and fs.read(SCAN_PERIOD_MAX) == "60000"
    assert e.live_uses() == ("hot_threshold_ms=2000",)
    assert set(json.loads((tmp_path / "run/nb.json").read_text())) == {
        NUMA_BALANCING,
        DEMOTION,
        RATE_LIMIT,
        HOT_THRESHOLD,
    }
    e.stop()  # restores only what it wrote: no error for the scan knobs
    assert knobs(fs) == KERNEL_DEFAULTS
