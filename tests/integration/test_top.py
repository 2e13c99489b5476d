"""`cxltierd top` in a real terminal: tmux runs it against the emulated daemon; the screen read back shows the tiers
and live values that change between refreshes, and `q` ends it with exit 0. Also its screen without a daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

from click.testing import CliRunner

from cxltierd.cli import main
from cxltierd.report.top import top_lines
from tests.integration.daemon import Daemon

POLICY = "interval: 200ms\nrate_limit: {mb_per_s: 4096}\n"


def tmux(server: str, *args: str) -> str:
    out = subprocess.run(["tmux", "-L", server, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def screen(server: str) -> str:
    return tmux(server, "capture-pane", "-p", "-t", "top")


def wait(predicate, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ticks(text: str) -> int | None:
    m = re.search(r"ticks (\d+),", text)
    return int(m.group(1)) if m else None


def test_top_in_tmux_shows_live_values_and_quits_on_q(tmp_path):
    assert shutil.which("tmux"), "tmux missing: apt-get install tmux (tests/run.sh does)"
    (tmp_path / "policy.yaml").write_text(POLICY)
    d = Daemon(tmp_path, "--config", str(tmp_path / "policy.yaml"))
    server = f"cxltierd-top-{tmp_path.name}"
    try:
        d.wait_message("READY=1")
        # a shell reports top's exit status on the screen (tmux's own pane_dead_status is not always filled in)
        command = f"sh -c '{sys.executable} -m cxltierd top --socket {d.control} --interval 0.5; echo top exited $?'"
        tmux(server, "new-session", "-d", "-s", "top", "-x", "110", "-y", "40", command)
        tmux(server, "set-option", "-t", "top", "remain-on-exit", "on")

        def screen_with_ticks(at_least: int):
            text = screen(server)
            return text if (ticks(text) or -1) >= at_least else None

        first = wait(lambda: screen_with_ticks(0), what="a first screen")
        assert "cxltierd top - emulated backend, engine simulated, health ok" in first
        rows = {line.split()[0]: line.split() for line in first.splitlines() if line.strip()}
        assert rows["ddr"][1] == "0,1" and rows["cxl"][1] == "2", first  # the tiers and their nodes
        assert "MOVES" in first and "q quits" in first
        later = wait(lambda: screen_with_ticks(ticks(first) + 3), what="ticks to advance on screen")
        assert later != first
        wait(lambda: re.search(r"\S+->\S+ +[\d.]+ \w?i?B/s", screen(server)), what="a moves-per-second row")
        tmux(server, "send-keys", "-t", "top", "q")
        exited = wait(lambda: re.search(r"top exited (\d+)", screen(server)), what="top to exit on q")
        assert exited.group(1) == "0", screen(server)
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=30)
        d.stop()


def test_top_once_without_a_daemon_says_so_and_exits_3(tmp_path):
    result = CliRunner().invoke(main, ["top", "--socket", str(tmp_path / "none.sock"), "--once"])
    assert result.exit_code == 3
    assert "cxltierd top: " in result.stdout and "no daemon" in result.stdout


def test_rates_are_per_second_between_two_replies():
    doc = {
        "backend": "emulated",
        "engine": "simulated",
        "ticks": 9,
        "last_tick": None,
        "policy": {"source": "p.yaml", "interval": 1.0},
        "tiers": [{"tier": "ddr", "nodes": [0], "total_bytes": 8 << 30, "free_bytes": 2 << 30, "hot_bytes": 1 << 30}],
        "counters": {"migrated_bytes": {"cxl->ddr": 30 << 20}, "failures": {"busy": 2}, "ping_pong": 0},
    }
    before = {**doc, "counters": {**doc["counters"], "migrated_bytes": {"cxl->ddr": 10 << 20}}}
    lines = top_lines(doc, before, 2.0)
    (row,) = [x for x in lines if x.startswith("cxl->ddr")]
    assert row.split()[1:] == ["10.0", "MiB/s", "30.0", "MiB"], row
    (ddr,) = [x for x in lines if x.startswith("ddr")]
    assert ddr.split()[2:] == ["8.0", "GiB", "6.0", "GiB", "2.0", "GiB", "1.0", "GiB"]
    assert "failures (pages): busy 2" in "\n".join(lines)


def test_the_screen_shows_cxl_health_when_the_daemon_reads_it():
    doc = {
        "backend": "host",
        "engine": "damos",
        "ticks": 3,
        "last_tick": None,
        "policy": {"source": "p.yaml", "interval": 5.0},
        "tiers": [],
        "counters": {"migrated_bytes": {}, "failures": {}, "ping_pong": 0},
        "ras": {
            "enabled": True,
            "problem": None,
            "source": "/sys/kernel/tracing/instances/cxltierd",
            "memdevs": {"mem0": {"state": "failing", "cause": "uncorrectable cxl_dram", "poison_records": 2}},
            "nodes": {"4": "failing"},
            "avoided_nodes": [4],
            "drains": {"4": {"status": "running", "moved": 64 << 20, "remaining": 32 << 20}},
            "events": [{"memdev": "mem0", "event": "cxl_dram", "severity": "uncorrectable", "count": 1}],
        },
    }
    screen = "\n".join(top_lines(doc, None, 1.0, width=200))
    assert "mem0: failing, 2 poison records (uncorrectable cxl_dram)" in screen
    assert "node 4: failing (no placement into it)" in screen
    assert "drain of node 4: running, 64.0 MiB moved, 32.0 MiB left" in screen
