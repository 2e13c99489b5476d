"""The daemon on the lab's real kernel: `cxltierd doctor`, CXL hotplug through real udev events, clean stops, crash
recovery from the state files, and refusing another tool's kdamond. Kernel views: DAMON sysfs (nr_kdamonds, each
kdamond's state, pid and target regions), the sysctls, /sys/devices/system/node, and page placement."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import (
    DAMON_NAMES,
    CxlHotplug,
    DaemonFactory,
    Workload,
    accepted_by_hand,
    access_figures,
    cost,
    kernel_tiers,
    read,
)

CXLTIERD = str(Path(__file__).resolve().parents[2] / ".venv/bin/cxltierd")
KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")
NB = "/proc/sys/kernel/numa_balancing"
DEMOTION = "/sys/kernel/mm/numa/demotion_enabled"
RATE = "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps"
DAMON_STAT = Path("/sys/module/damon_stat/parameters/enabled")  # 7.3 runs it by default; 6.12 has no such module
# What doctor warns about on this guest, and why (anything else is a regression):
EXPECTED_WARNINGS = {
    "node 2": "the CPU-less plain-RAM node with slow HMAT figures has no evidence of its kind (classified unknown)",
    "demotion_enabled": "the guest boots with demotion_enabled false",
    "numa_balancing": "the guest boots with kernel.numa_balancing 1 (no tiering mode)",
    "ras": "the lab's PID 1 does not mount tracefs (test_ras_lab.py mounts it)",
    "ras-health": "QEMU's type-3 device implements no Get Health Info (seen once tracefs is mounted)",
}


def kdamonds() -> list[tuple[str, str]]:
    nr = int(read(KDAMONDS / "nr_kdamonds"))
    return [(read(KDAMONDS / f"{i}/state"), read(KDAMONDS / f"{i}/pid")) for i in range(nr)]


def hot_regions() -> list[tuple[int, int]]:
    """Physical ranges the DAMOS engine's hot kdamond (0) monitors."""
    base = KDAMONDS / "0/contexts/0/targets/0/regions"
    return [
        (int(read(base / f"{i}/start")), int(read(base / f"{i}/end"))) for i in range(int(read(base / "nr_regions")))
    ]


def node_range(node: int) -> tuple[int, int]:
    """[start, end) of a node's memory blocks (contiguous for the CXL node)."""
    size = int(read("/sys/devices/system/memory/block_size_bytes"), 16)
    blocks = sorted(int(p.name[6:]) for p in Path(f"/sys/devices/system/node/node{node}").glob("memory[0-9]*"))
    return blocks[0] * size, (blocks[-1] + 1) * size


def node_metrics(m: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, str]:
    """node -> kind from cxltierd_node_info."""
    return {labels["node"]: labels["kind"] for labels, _ in m.get("cxltierd_node_info", [])}


def damos_policy(cgroup: str) -> dict[str, Any]:
    return {
        "engine": "damos",
        "interval": "1s",
        "processes": {"manage": [{"cgroup": cgroup}], "min_rss": "1MiB"},
    }


def test_doctor_passes_on_the_lab_guest(cxl_node: int) -> None:
    """`cxltierd doctor --json` on the real /sys: no failed check, and warnings only for EXPECTED_WARNINGS (exit 1).

    The CXL chain (kernel, bus, region0 committed and bound, dax0.0 system-ram in ZONE_MOVABLE, auto-online
    movable), the tier order, DAMON and the capabilities all check out. The order of node 2 and the CXL node is the
    one the access figures this kernel reports support (see test_tier_order_follows_the_kernels_figures).
    """
    out = subprocess.run([CXLTIERD, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    checks = json.loads(out.stdout)
    status = {c["name"]: c["status"] for c in checks}
    warned = {c["name"] for c in checks if c["status"] == "warn"}
    assert out.returncode == (1 if warned else 0), out.stderr
    assert not [c for c in checks if c["status"] == "fail"], checks
    assert warned <= set(EXPECTED_WARNINGS), [c for c in checks if c["name"] in warned - set(EXPECTED_WARNINGS)]
    for name in ("kernel", "cxl-bus", "region region0", "dax dax0.0", "auto_online_blocks", "tiers", "damon"):
        assert status.get(name) == "ok", (name, checks)
    assert status.get("capabilities") == "ok"
    tiers = next(c["message"] for c in checks if c["name"] == "tiers")
    node2_first = evidence_says_node_2_first(cxl_node)
    expected = (
        ["ddr[0,1]", "unknown[2]", f"cxl[{cxl_node}]"]
        if node2_first
        else ["ddr[0,1]", f"cxl[{cxl_node}]", "unknown[2]"]
    )
    assert tiers == " > ".join(expected), (tiers, os.uname().release)
    assert status.get("memory-tiers") == "ok", checks  # and the kernel's memory tiers agree


def evidence_says_node_2_first(cxl_node: int) -> bool:
    """Is node 2 faster than the CXL node by the access figures the kernel reports (HMAT for node 2; node 4's own
    HMAT entries or, when the kernel shows none, region0's CDAT-based ones)? Printed for the README's table."""
    node2 = access_figures(2)
    cxl = access_figures(cxl_node, "region0")
    assert node2 is not None and cxl is not None, (node2, cxl)
    print(f"kernel {os.uname().release}: node 2 {node2}, node {cxl_node} {cxl}, memory tiers {kernel_tiers()}")
    return cost(node2[1]) < cost(cxl[1])


def test_tier_order_follows_the_kernels_figures(cxl_node: int) -> None:
    """The access figures and the kernel's own memory tiers (computed by the kernel from the same figures) agree on
    which of node 2 and the CXL node is faster, and `cxltierd topology` ranks them that way, whichever it is on this
    kernel (6.12: node 2; 7.3: the CXL node)."""
    node2_first = evidence_says_node_2_first(cxl_node)
    kt = kernel_tiers()
    assert (kt[2] < kt[cxl_node]) == node2_first, (kt, node2_first)
    out = subprocess.run([CXLTIERD, "topology", "--root", "/", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    rank = {n: t["rank"] for t in doc["tiers"] for n in t["nodes"]}
    assert (rank[2] < rank[cxl_node]) == node2_first, doc["tiers"]
    assert doc["kernel"]["memory_tiers_consistent"] is True, doc["kernel"]


def test_hotplug_node_goes_and_comes_back(
    cxl_node: int,
    cxl_hotplug: CxlHotplug,
    workload: Callable[..., Workload],
    test_cgroup: str,
    lab_daemon: DaemonFactory,
    pages_on_nodes: Callable[[int, int, int], dict[int, int]],
    knob: Callable[[str, str], None],
) -> None:
    """Real hotplug under a running daemon (DAMOS engine), seen through the daemon's pyudev monitor.

    Kernel view: offlining node 4's blocks and unbinding dax0.0 from kmem removes /sys/devices/system/node/node4;
    the daemon logs the udev events and "node 4 (cxl) gone", drops node 4 from its metrics and from the physical
    ranges its hot kdamond monitors, and keeps ticking. Binding dax0.0 to kmem again brings node 4 back (online,
    movable): "node 4 (cxl) appeared", node 4 is monitored again, and a new hot workload on it is promoted to DDR.
    Nothing of any workload sits on node 4 when it goes (no workload is running yet; its used memory is checked).
    """
    knob(NB, "0")
    span = node_range(cxl_node)
    d = lab_daemon(damos_policy(test_cgroup))
    d.wait_ticks(2, 120)
    assert node_metrics(d.metrics()).get(str(cxl_node)) == "cxl"
    assert span in hot_regions()
    meminfo = read(f"/sys/devices/system/node/node{cxl_node}/meminfo")
    total, free = (int(re.search(rf"{k}:\s+(\d+) kB", meminfo).group(1)) for k in ("MemTotal", "MemFree"))  # type: ignore[union-attr]
    assert total - free < 16 << 10, f"node {cxl_node} holds {total - free} kB: something would be migrated away"

    cxl_hotplug.unplug()
    assert not Path(f"/sys/devices/system/node/node{cxl_node}").exists()
    d.wait_log(rf"hotplug: node remove node{cxl_node}", 60)
    d.wait_log(rf"topology changed after \d+ event\(s\): node {cxl_node} \(cxl\) gone", 60)
    d.wait_ticks(d.ticks() + 2, 60)
    m = d.metrics()
    assert str(cxl_node) not in node_metrics(m), node_metrics(m)
    assert span not in hot_regions() and hot_regions(), hot_regions()
    assert d.status()["counters"]["topology_changes"] == 1

    cxl_hotplug.replug()
    d.wait_log(rf"topology changed after \d+ event\(s\): node {cxl_node} \(cxl\) appeared", 60)
    d.wait_ticks(d.ticks() + 2, 60)
    assert node_metrics(d.metrics()).get(str(cxl_node)) == "cxl"
    assert span in hot_regions()
    assert d.status()["counters"]["topology_changes"] == 2

    w = workload(cxl_node, 16, 8, cgroup=test_cgroup, cpu=1, companion=True)
    assert w.placement() == {cxl_node: w.pages}
    hot_pages = w.hot_length // w.page_size
    d.wait_for(
        lambda: (
            sum(v for n, v in pages_on_nodes(w.pid, w.addr, w.hot_length).items() if n in (0, 1)) >= 0.9 * hot_pages
        ),
        150,
        "the new workload's hot pages on DDR",
        poll=1.0,
    )
    d.wait_for(
        lambda: d.status()["counters"]["migrated_pages"].get("cxl->ddr", 0) >= 0.9 * hot_pages,
        30,
        "the daemon to count the promotion",
        poll=1.0,
    )
    assert d.stop() == 0


def test_crash_recovery_damos(test_cgroup: str, lab_daemon: DaemonFactory, tmp_path: Path) -> None:
    """SIGKILL leaves the kdamonds running; the next daemon with the same state dir removes them and starts its own.

    Kernel view: two kdamonds (on) after the first start; still there, same pids, after SIGKILL; after the restart two
    kdamonds again with new pids and no conflict reported; after SIGTERM none, and the state file is gone.
    """
    state = tmp_path / "state"
    stat_before = read(DAMON_STAT) if DAMON_STAT.exists() else None
    d1 = lab_daemon(damos_policy(test_cgroup), state_dir=state)
    d1.wait_ticks(2, 120)
    first = kdamonds()
    assert [s for s, _ in first] == ["on", "on"]
    if stat_before == "Y":  # 7.3: the engine turned DAMON_STAT off, says so, and remembers it was on
        assert read(DAMON_STAT) == "N" and "DAMON_STAT turned off" in d1.status()["engine_reason"]
    assert d1.stop(9) == -9
    assert kdamonds() == first, "the kill stopped the kdamonds?"
    assert json.loads((state / "kdamonds.json").read_text())["nr_kdamonds"] == 2
    if stat_before == "Y":
        assert read(DAMON_STAT) == "N" and json.loads((state / "damon_stat.json").read_text()) == {"enabled": "Y"}

    d2 = lab_daemon(damos_policy(test_cgroup), state_dir=state)
    d2.wait_ticks(2, 120)
    second = kdamonds()
    assert [s for s, _ in second] == ["on", "on"]
    assert {p for _, p in second}.isdisjoint(p for _, p in first), (first, second)
    assert d2.status()["conflicts"] == [] and "conflict" not in d2.log()
    assert d2.stop() == 0
    assert read(KDAMONDS / "nr_kdamonds") == "0"
    assert not (state / "kdamonds.json").exists()
    if stat_before is not None:  # the second daemon gave DAMON_STAT back as it was before the first one
        assert read(DAMON_STAT) == stat_before and not (state / "damon_stat.json").exists()


def test_crash_recovery_numa_balancing(
    test_cgroup: str, lab_daemon: DaemonFactory, tmp_path: Path, knob: Callable[[str, str], None]
) -> None:
    """After a SIGKILL the knobs stay as the daemon set them; the next daemon restores the values from before the
    first one (its state file), not the ones it found, and reports no conflict over its predecessor's setting."""
    knob(NB, "0")
    old = {p: read(p) for p in (NB, DEMOTION, RATE)}
    state = tmp_path / "state"
    pol = {"engine": "numa_balancing", "interval": "1s", "rate_limit": {"mb_per_s": 300}}
    d1 = lab_daemon(pol, state_dir=state)
    d1.wait_ticks(1, 120)
    assert (read(NB), read(DEMOTION), read(RATE)) == ("2", "true", "300")
    assert d1.stop(9) == -9
    assert read(NB) == "2"
    d2 = lab_daemon(pol, state_dir=state)
    d2.wait_ticks(1, 120)
    assert d2.status()["conflicts"] == []
    assert d2.stop() == 0
    assert {p: read(p) for p in old} == old
    assert not (state / "numa_balancing.json").exists()


def test_someone_elses_kdamond_is_left_alone(
    knob: Callable[[str, str], None], lab_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """A kdamond created by hand (not recorded in cxltierd's state file) is never taken over.

    Where the kernel runs DAMON_STAT (7.3) it is turned off first, or the hand-made kdamond could not start (EBUSY);
    `knob` is requested before `lab_daemon` so that its teardown turns DAMON_STAT back on after the kdamond is gone.

    With `engine: auto` the daemon runs anyway, on the NUMA-balancing engine, and reports the conflict: a log line,
    the `status` conflicts, cxltierd_engine_info; the foreign kdamond keeps running with the same pid through the
    daemon's start and stop. With `engine: damos` forced, `cxltierd run` refuses to start (exit 2, one line naming
    the kdamond) without writing to DAMON.
    """
    if DAMON_STAT.exists():
        knob(str(DAMON_STAT), "N")
    node0 = node_range(0)
    writes = [
        ("nr_kdamonds", "1"),
        ("0/contexts/nr_contexts", "1"),
        ("0/contexts/0/operations", "paddr"),
        ("0/contexts/0/targets/nr_targets", "1"),
        ("0/contexts/0/targets/0/regions/nr_regions", "1"),
        ("0/contexts/0/targets/0/regions/0/start", str(node0[0])),
        ("0/contexts/0/targets/0/regions/0/end", str(node0[0] + (64 << 20))),
        ("0/state", "on"),
    ]
    for path, value in writes:
        (KDAMONDS / path).write_text(value)
    foreign = kdamonds()
    assert foreign[0][0] == "on"
    pid = foreign[0][1]

    d = lab_daemon({"engine": "auto", "interval": "1s"})
    d.wait_ticks(2, 120)
    line = d.wait_log(r"WARNING conflict: DAMON in use by another tool \(kdamond 0 \(on, pid (\d+)\)\)", 10)
    assert line.group(1) == pid
    st = d.status()
    assert st["engine"] == "numa_balancing" and any("kdamond 0 (on, pid " + pid in c for c in st["conflicts"])
    info = d.metrics()["cxltierd_engine_info"]
    assert [labels["engine"] for labels, _ in info] == ["numa_balancing"]
    assert kdamonds() == foreign
    assert d.stop() == 0
    assert kdamonds() == foreign

    config = tmp_path / "damos.yaml"
    config.write_text(yaml.safe_dump({"engine": "damos"}))
    started = time.monotonic()
    cmd = [CXLTIERD, "run", "--backend", "host", "--config", str(config), "--listen", "off", "--socket", "off"]
    out = subprocess.run(
        [*cmd, "--state-dir", str(tmp_path / "state"), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr, time.monotonic() - started)
    assert re.search(r"engine damos cannot run here: it needs DAMON sysfs not in use by another tool", out.stderr)
    assert kdamonds() == foreign


def test_damon_stat_left_running_when_the_policy_says_so(lab_daemon: DaemonFactory) -> None:
    """With damon.take_over_damon_stat false, a running DAMON_STAT is left alone: `engine: auto` runs the
    NUMA-balancing engine and says why, no sysfs kdamond is created, and DAMON_STAT is never reported as a conflict
    (it is not a sysfs kdamond). Kernels without DAMON_STAT (6.12) have nothing to check."""
    if not DAMON_STAT.exists() or read(DAMON_STAT) != "Y":
        pytest.skip(f"no running DAMON_STAT on kernel {os.uname().release}")
    d = lab_daemon({"engine": "auto", "interval": "1s", "damon": {"take_over_damon_stat": False}})
    d.wait_ticks(2, 120)
    st = d.status()
    assert st["engine"] == "numa_balancing", st["engine_reason"]
    assert "DAMON_STAT kdamond runs" in st["engine_reason"] and "take_over_damon_stat is false" in st["engine_reason"]
    assert st["conflicts"] == [] and "conflict" not in d.log()
    assert read(DAMON_STAT) == "Y" and read(KDAMONDS / "nr_kdamonds") == "0"
    assert d.stop() == 0
    assert read(DAMON_STAT) == "Y"


def test_damon_features_are_what_the_kernel_accepts() -> None:
    """`doctor` lists the DAMON features cxltierd's probe found (a scratch kdamond, never started, refusing names with
    EINVAL); the same names written by hand into the same files get the same answers, on each lab kernel."""
    assert read(KDAMONDS / "nr_kdamonds") == "0"
    out = subprocess.run([CXLTIERD, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    check = next(c for c in json.loads(out.stdout) if c["name"] == "damon-features")
    assert check["status"] == "ok" and check["message"].startswith("the kernel accepts: "), check
    probed = set(check["message"].removeprefix("the kernel accepts: ").split(", "))
    by_hand = accepted_by_hand()
    asked = {n if k == "action" else f"{k}:{n}" for k, ns in DAMON_NAMES.items() for n in ns} | {"refresh_ms"}
    print(f"DAMON features on {os.uname().release}: {sorted(by_hand)}")
    assert probed & asked == by_hand, (sorted(probed & asked), sorted(by_hand))
    assert {"migrate_hot", "migrate_cold", "filter:young", "filter:addr", "filter:memcg"} <= by_hand
    assert read(KDAMONDS / "nr_kdamonds") == "0"  # the probe left nothing behind
