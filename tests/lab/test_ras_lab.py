"""RAS on the lab's real kernel: CXL errors injected through QEMU's QMP (the runner's relay) reach the daemon through
its own tracefs instance; it marks mem0 and node 4 as the policy says, reports it in metrics and `status`, drains
node 4 without changing a byte of a workload's buffer, keeps the state across a restart, and removes its instance
on stop. QEMU does not return poison when CXL memory is read, so consuming poison is not tested here.

Kernel views: /sys/kernel/tracing/instances, move_pages(2) placement of the buffer, /proc/PID/mem for its bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from labkit import CXL_DEVICE, DaemonFactory, Workload, qmp

TRACING = Path("/sys/kernel/tracing")
INSTANCE = TRACING / "instances/cxltierd"
MiB = 1 << 20
POLICY: dict[str, Any] = {
    "interval": "1s",
    "engine": "move_pages",
    "hotness": {"hot_threshold": 1e9},  # nothing is hot: only the drain moves the buffer
    "ras": {
        "poison_poll": "2s",
        "drain": {"rate": "64MiB", "reserve": "32MiB", "reserve_percent": 0},
    },
}


@pytest.fixture
def tracefs() -> None:
    """tracefs mounted at /sys/kernel/tracing (systemd does it on a normal boot; the lab's PID 1 does not)."""
    if not (TRACING / "instances").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True, timeout=30)


def fill(w: Workload) -> str:
    """Write random bytes over the workload's buffer (through /proc/PID/mem); their sha256."""
    data = os.urandom(w.length)
    with open(f"/proc/{w.pid}/mem", "r+b", buffering=0) as f:
        f.seek(w.addr)
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def checksum(w: Workload) -> str:
    with open(f"/proc/{w.pid}/mem", "rb", buffering=0) as f:
        f.seek(w.addr)
        return hashlib.sha256(f.read(w.length)).hexdigest()


def sample(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    for got, value in metrics.get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return None


def inject(command: str, **args: Any) -> None:
    reply = qmp(command, path=CXL_DEVICE, **args)
    assert reply == {"return": {}}, f"{command}: {reply}"


def test_injected_errors_degrade_then_drain_node_4(
    tracefs: None, lab_daemon: DaemonFactory, workload: Any, cxl_node: int, tmp_path: Path
) -> None:
    assert cxl_node == 4
    w = workload(cxl_node, 16, 0, unbind=True)
    assert w.placement() == {4: w.pages}
    digest = fill(w)
    state = tmp_path / "state"
    d = lab_daemon(POLICY, state_dir=state)
    d.wait_log(r"RAS: reading cxl trace events from /sys/kernel/tracing/instances/cxltierd")
    assert (INSTANCE / "events/cxl/cxl_general_media/enable").read_text().strip() == "1"
    assert (TRACING / "events/cxl/cxl_general_media/enable").read_text().strip() == "0"  # the global buffer untouched

    # poison: listed at the next poll -> one poison record -> mem0 degraded (poison_records.degraded 1), no drain
    inject("cxl-inject-poison", start=0x40000, length=64)
    d.wait_log(r"RAS: cxl_poison on mem0", timeout=60)
    d.wait_log(r"mem0: healthy -> degraded \(1 poison records")
    d.wait_log(r"RAS: node 4 is degraded \(mem0\)")
    assert "draining node 4" not in d.log()
    assert w.placement() == {4: w.pages}

    # a memory-module event carries the device's health figures
    inject(
        "cxl-inject-memory-module-event",
        log="warning",
        flags=1,
        type=3,
        **{
            "health-status": 0,
            "media-status": 0,
            "additional-status": 0,
            "life-used": 33,
            "temperature": 56,
            "dirty-shutdown-count": 1,
            "corrected-volatile-error-count": 7,
            "corrected-persistent-error-count": 0,
        },
    )
    d.wait_log(r"RAS: cxl_memory_module on mem0 \(Warning\)")

    # a corrected DRAM event (no UNCORRECTABLE_EVENT in its descriptor): counted, no change of state
    inject(
        "cxl-inject-dram-event",
        log="informational",
        flags=1,
        dpa=0x2000,
        descriptor=0,
        type=3,
        channel=1,
        rank=0,
        **{"transaction-type": 192},
    )
    d.wait_log(r"RAS: cxl_dram on mem0 \(Informational\)")
    assert "mem0: degraded -> failing" not in d.log()

    # an uncorrectable media event -> failing within two ticks -> node 4 drained
    ticks = d.ticks()
    inject(
        "cxl-inject-general-media-event",
        log="failure",
        flags=1,
        dpa=0x1000,
        descriptor=3,
        type=3,
        **{"transaction-type": 192},
    )
    d.wait_log(r"mem0: degraded -> failing \(uncorrectable cxl_general_media at dpa 0x1000\)")
    assert d.ticks() - ticks <= 2, "the failing state took more than two ticks"
    d.wait_log(r"RAS: drain of node 4: \d+ bytes moved this step, 0 left \(done\)", timeout=120)
    placement = w.placement()
    assert placement.get(4, 0) == 0 and sum(placement.values()) == w.pages, placement
    assert checksum(w) == digest, "the buffer changed during the drain"

    m = d.metrics()
    assert sample(m, "cxltierd_ras_events_total", memdev="mem0", event="cxl_general_media", severity="Failure") == 1
    assert sample(m, "cxltierd_ras_events_total", memdev="mem0", event="cxl_poison", severity="none")
    assert sample(m, "cxltierd_ras_events_total", memdev="mem0", event="cxl_dram", severity="Informational") == 1
    assert sample(m, "cxltierd_ras_poison_records", memdev="mem0") == 1
    assert sample(m, "cxltierd_ras_node_state", node="4", state="failing") == 1
    assert sample(m, "cxltierd_ras_drain_done", node="4") == 1
    assert sample(m, "cxltierd_ras_memdev_health", memdev="mem0", figure="life_used") == 33
    ras = d.status()["ras"]
    assert ras["nodes"] == {"4": "failing"} and ras["avoided_nodes"] == [4]
    assert ras["memdevs"]["mem0"]["state"] == "failing" and ras["memdevs"]["mem0"]["poison_records"] == 1
    assert ras["drains"]["4"]["status"] == "done"
    assert ras["drains"]["4"]["moved"] == sample(m, "cxltierd_ras_drain_moved_bytes_total", node="4")
    d.keep_log(f"ras-{os.uname().release}")
    assert d.stop() == 0
    assert not INSTANCE.exists(), "the tracefs instance outlived the daemon"

    # a restart keeps the latched state: node 4 stays failing and avoided with no new event
    again = lab_daemon(POLICY, state_dir=state)
    again.wait_log(r"RAS: resumed 1 memdev states and 1 drains")
    again.wait_ticks(2)
    assert again.status()["ras"]["nodes"] == {"4": "failing"}
    assert w.placement().get(4, 0) == 0
    assert re.search(r"RAS: node 4 is failing", again.log())


def test_operator_drain_resumes_after_a_restart_and_offlines_the_node(
    tracefs: None, lab_daemon: DaemonFactory, workload: Any, cxl_hotplug: Any, tmp_path: Path
) -> None:
    """`cxltierd drain 4` at a rate that takes several ticks, a restart mid-drain, and ras.drain.offline."""
    node = cxl_hotplug.node
    # A process moves whole (one migrate_pages call), so four of 8 MiB at 8 MiB a step leave three steps between the
    # first one and the stop. (With two of 16 MiB the second step sometimes ran before the stop took effect: a tick
    # that overran its interval is followed at once by the next.)
    procs = [workload(node, 8, 0, unbind=True) for _ in range(4)]
    policy = {
        **POLICY,
        "interval": "3s",  # room to stop the daemon between two drain steps
        "ras": {"poison_poll": "1h", "drain": {"rate": "8MiB", "max_step": "1s", "reserve": "32MiB", "offline": True}},
    }
    state = tmp_path / "state"
    d = lab_daemon(policy, state_dir=state)
    d.wait_log(r"RAS: reading cxl trace events")
    d.wait_ticks(1)
    cli = [str(Path(__file__).resolve().parents[2] / ".venv/bin/cxltierd")]
    out = subprocess.run([*cli, "drain", str(node), "--socket", str(d.socket)], capture_output=True, text=True)
    assert out.returncode == 0 and f"drain of node {node} applies at the next tick" in out.stdout, out.stderr
    d.wait_log(rf"RAS: operator: draining node {node}")
    d.wait_log(rf"RAS: drain of node {node}: \d+ bytes moved this step, [1-9]\d* left \(rate limit\)")
    assert d.stop() == 0
    on_node = [w.placement().get(node, 0) for w in procs]
    assert max(on_node) > 0, f"not mid-drain: {on_node}"

    again = lab_daemon(policy, state_dir=state)
    again.wait_log(r"RAS: resumed \d+ memdev states and 1 drains")
    again.wait_log(rf"RAS: drain of node {node}: \d+ bytes moved this step, 0 left \(done\)", timeout=120)
    assert [w.placement().get(node, 0) for w in procs] == [0] * len(procs)
    again.wait_log(rf"RAS: node {node} drained, its \d+ memory blocks offline", timeout=120)
    states = {blk: Path(f"/sys/devices/system/memory/{blk}/state").read_text().strip() for blk in cxl_hotplug.blocks}
    assert set(states.values()) == {"offline"}, states
    out = subprocess.run([*cli, "undrain", str(node), "--socket", str(again.socket)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    again.wait_log(rf"RAS: operator: node {node} undrained")
    # the log line comes from the tick's start, status from the snapshot published at its end
    again.wait_for(lambda: again.status()["ras"]["drains"] == {}, 60, "the drain gone from status")
    again.keep_log(f"ras-restart-{os.uname().release}")
