"""`cxltierd run --backend emulated` end to end with a fake clock, `simulate`, and `policy check`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cxltierd.cli import main
from cxltierd.emulate.simulate import run as simulate

REPO = Path(__file__).resolve().parents[2]


def test_run_hotset_shift_beats_static_with_a_fake_clock(tmp_path):
    """The daemon's own loop on the emulated host: its fast-tier share rises above first-touch placement.

    80 ticks of 5 s: hotset-shift's hot set starts on DDR (first touch) and has moved onto CXL by 270 s."""
    (tmp_path / "p.yaml").write_text("interval: 5s\n")
    ticks = 80
    proc = subprocess.run(
        [sys.executable, "-m", "cxltierd", "run", "--backend", "emulated", "--scenario", "hotset-shift",
         "--config", str(tmp_path / "p.yaml"), "--fake-clock", "--ticks", str(ticks),
         "--listen", "off", "--socket", "off"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = re.findall(r"tick (\d+): moved .*?, fast-tier share ([\d.]+%|n/a)", proc.stderr)
    assert len(lines) == ticks and lines[0][1] == "n/a"  # the first tick observes no interval yet
    shares = [float(s[:-1]) / 100 for _, s in lines[1:]]
    static = simulate("hotset-shift", "static", duration=ticks * 5, interval=5.0)
    assert len(static.series) == ticks
    ours = sum(shares) / len(shares)
    theirs = sum(s for _, s in static.series[1:]) / (ticks - 1)
    assert ours > theirs + 0.1, (ours, theirs)
    assert shares[-1] > 0.85  # back on top after the last shift


def test_once_and_dry_run(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cxltierd", "run", "--backend", "emulated", "--once", "--dry-run",
         "--listen", "off", "--socket", "off"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ticks = re.findall(r"tick \d+: .*", out.stderr)
    assert len(ticks) == 1 and "dry run:" in ticks[0] and "moves planned" in ticks[0]


def test_auto_backend_falls_back_to_emulated_on_a_one_tier_host(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cxltierd", "run", "--root", str(REPO / "fixtures/hosts/single-node"), "--once",
         "--listen", "off", "--socket", "off"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "this host has 1 memory tier (ddr): running the emulated host instead" in out.stderr
    assert "backend emulated, engine simulated" in out.stderr


def test_installed_outside_the_source_tree_finds_its_data(tmp_path):
    """The embedded host and scenarios come from the package, not from the checkout."""
    code = (
        "import cxltierd.embedded as e, cxltierd.emulate as m;"
        "print(e.host_names(), m.scenario_names(), e.default_root().joinpath('sys').is_dir())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        "['default', 'xeon-max-cxl']" in out.stdout
        and "'zipf-static'" in out.stdout
        and out.stdout.strip().endswith("True")
    )


def test_simulate_prints_policy_and_baselines():
    result = CliRunner().invoke(main, ["simulate", "--scenario", "zipf-static", "--duration", "30"])
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()
    placers = [line.split()[0] for line in table[2:]]
    assert placers == ["cxltierd", "static", "promote-on-access", "age", "oracle"]
    assert "overall" in table[1] and "ping-pong" in table[1]
    result = CliRunner().invoke(
        main, ["simulate", "--scenario", "zipf-static", "--duration", "20", "--json", "--no-baselines"]
    )
    (doc,) = json.loads(result.stdout)
    assert doc["placer"] == "cxltierd" and 0 < doc["fast_tier_access_share"] <= 1 and len(doc["series"]) == 20


def test_simulate_unknown_scenario_is_one_line():
    result = CliRunner().invoke(main, ["simulate", "--scenario", "nope"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "nope" in result.stderr and "zipf-static" in result.stderr


def test_policy_check(tmp_path):
    good = CliRunner().invoke(main, ["policy", "check", str(REPO / "packaging/policy.yaml")])
    assert good.exit_code == 0 and ": ok (engine auto" in good.output
    (tmp_path / "bad.yaml").write_text("hotness: {half_lfe: 3}\n")
    bad = CliRunner().invoke(main, ["policy", "check", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2
    assert bad.stderr.strip().endswith(
        "bad.yaml: line 1: hotness.half_lfe: unknown key 'half_lfe' (did you mean 'half_life'?)"
    )
