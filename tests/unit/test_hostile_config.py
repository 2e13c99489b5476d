"""Hostile or broken policy and scenario files: every one ends in a one-line ConfigError naming the file, from the
loaders, the CLI and the daemon's reload (which keeps the old policy), never in a traceback or a frozen process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxltierd.app import Settings, build
from cxltierd.cli import main
from cxltierd.emulate import read_scenario
from cxltierd.errors import ConfigError
from cxltierd.policy.schema import load_policy, parse_policy
from cxltierd.service.daemon import Daemon, FakeClock, Options
from cxltierd.shown import show

HOSTS = Path(__file__).resolve().parents[2] / "fixtures" / "hosts"
SCENARIO = """\
nodes: {0: 1GiB, 2: 4GiB}
processes:
  - name: a
    size: 64MiB
    phases: [{pattern: uniform, rate: 100}]
"""
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)

HOSTILE_POLICIES = [
    ("interval: " + "9" * 320, "p.yaml: line 1: an integer of 320 characters (at most 100)"),
    ("interval: " + "9" * 5000, "p.yaml: line 1: an integer of 5000 characters (at most 100)"),
    (
        "interval: " + "9" * 99,
        "p.yaml: interval: must be a duration in [0.01, 3600] s, got <integer of 99 digits>",
    ),
    ("hotness: {hot_threshold: " + "9" * 99 + "}", "p.yaml: hotness.hot_threshold: must be a number in [0, 1"),
    ("processes: {min_rss: " + "9" * 99 + "}", "p.yaml: processes.min_rss: must be a size in [0B, 1024TiB]"),
    ("tiers: {overrides: {'²': cxl}}", "p.yaml: tiers.overrides.²: keys must be node ids (0, 1, ...)"),
    ("tiers: {overrides: {'٣': cxl}}", "p.yaml: tiers.overrides.٣: keys must be node ids (0, 1, ...)"),
    ("tiers: {overrides: {'" + "1" * 1000 + "': cxl}}", "p.yaml: tiers.overrides.1111111111"),
    ("tiers: {fast: " + "[" * 3000 + "]" * 3000 + "}", "p.yaml: line 1: nested more than 32 levels deep"),
    ("tiers: " + "{a: " * 3000 + "1" + "}" * 3000, "p.yaml: line 1: nested more than 32 levels deep"),
    ("processes: {manage: [{regex: 'a{4294967295}'}]}", "p.yaml: processes.manage[0].regex: invalid regular"),
    ("processes: {manage: [{regex: '" + "(" * 2000 + "a" + ")" * 2000 + "'}]}", "processes.manage[0].regex: "),
    ("processes: {min_rss: '" + "9" * 100_000 + "x'}", "p.yaml: processes.min_rss: must be a size in bytes"),
    ("cooldown: 2001-13-45", "p.yaml: not valid YAML: month must be in 1..12"),
    (LAUGHS, "values (aliases expanded)"),
    ("a: [1]\ninterval: *zz\n", "p.yaml: line 2: not valid YAML: found undefined alias 'zz'"),
    ("a: &a [*a]\n", "p.yaml: line 1: an alias refers to a value that contains it"),
    ("interval: &x [" + ", ".join(["y" * 1000] * 200) + "]\n", "p.yaml: interval: must be a duration"),
]


def policy_error(text: str) -> str:
    started = time.monotonic()
    with pytest.raises(ConfigError) as e:
        parse_policy(text, "p.yaml")
    assert time.monotonic() - started < 5, "refusing a file must not take long"
    return str(e.value)


def one_line(message: str, source: str) -> None:
    assert message.startswith(f"{source}: ") and "\n" not in message and len(message) < 400, message


@pytest.mark.parametrize(("text", "expected"), HOSTILE_POLICIES, ids=range(len(HOSTILE_POLICIES)))
def test_hostile_policies_give_one_line(text, expected):
    message = policy_error(text)
    one_line(message, "p.yaml")
    assert expected in message


def test_an_aliased_value_is_quoted_short_not_expanded():
    # 10**8 strings of a kilobyte once expanded: the message quotes the first few characters only
    text = (
        "x: &x ['"
        + "y" * 1000
        + "']\n"
        + "".join(f"x{i}: &x{i} [{', '.join(['*x' if i == 0 else f'*x{i - 1}'] * 10)}]\n" for i in range(8))
    )
    message = policy_error(text)
    one_line(message, "p.yaml")
    assert "values (aliases expanded)" in message
    assert show([["y" * 10**6] * 10] * 10**6) == "[['yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy..."
    assert show(10**5000) == "<integer of 5001 digits>"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.replace("0: 1GiB", "'²': 1GiB"), "s.yaml: nodes.²: node ids must be integers >= 0, got '²'"),
        (
            lambda s: s.replace("4GiB", "9" * 99),
            "s.yaml: nodes.2.capacity: must be a size in [4KiB, 1024TiB], got <integer of 99 digits>",
        ),
        (lambda s: s.replace("rate: 100", "rate: " + "9" * 99), "s.yaml: processes[0].phases[0].rate: must be a"),
        (lambda s: s.replace("rate: 100", "rate: " + "9" * 400), "s.yaml: line 5: an integer of 400 characters"),
        (lambda s: s + "seed: " + "9" * 4400 + "\n", "s.yaml: line 6: an integer of 4400 characters"),
        (lambda s: s + "x: " + "[" * 2000 + "]" * 2000 + "\n", "s.yaml: line 6: nested more than 32 levels"),
        (lambda s: s + LAUGHS.replace("a:", "xa:"), "values (aliases expanded)"),
    ],
)
def test_hostile_scenarios_give_one_line(tmp_path, edit, expected):
    path = tmp_path / "s.yaml"
    path.write_text(edit(SCENARIO))
    with pytest.raises(ConfigError) as e:
        read_scenario(path)
    one_line(str(e.value), str(path))
    assert expected.replace("s.yaml", str(path)) in str(e.value)


def test_cli_refuses_hostile_files_with_one_line(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("tiers: {overrides: {'²': cxl}}\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("rate: 100", "rate: " + "9" * 400))
    for args in (
        ["policy", "check", str(policy)],
        ["simulate", "--scenario", str(scenario), "--no-baselines", "--duration", "5"],
        ["run", "--backend", "emulated", "--config", str(policy), "--listen", "off", "--socket", "off", "--once"],
        ["run", "--backend", "emulated", "--scenario", str(scenario), "--listen", "off", "--socket", "off", "--once"],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cxltierd: error: " + str(tmp_path)), (args, result.output)


@pytest.fixture
def daemon(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("interval: 2s\n")
    rt, loop = build(
        Settings(backend="host", root=str(HOSTS / "single-node"), config=str(policy), state_dir=str(tmp_path))
    )
    d = Daemon(rt, loop, Options(), clock=FakeClock())
    yield d, policy
    d._shutdown()


@pytest.mark.parametrize("text", [t for t, _ in HOSTILE_POLICIES[::3]])
def test_reload_of_a_hostile_policy_keeps_the_old_one(daemon, text):
    d, policy = daemon
    policy.write_text(text)
    result = d.reload()
    assert not result.ok and result.error.startswith(str(policy)) and "\n" not in result.error
    assert d.loop.policy.interval == 2.0 and d.svc.reloads == {"success": 0, "failure": 1}


def test_reload_survives_any_exception_from_the_loader(daemon, monkeypatch, caplog):
    d, _ = daemon

    def broken() -> None:
        raise RuntimeError("a loader bug\nwith a second line")

    monkeypatch.setattr(type(d.rt), "load_policy", lambda self: broken())
    result = d.reload()
    assert not result.ok and result.error == "RuntimeError: a loader bug"
    assert d.loop.policy.interval == 2.0 and d.svc.reloads["failure"] == 1 and d.snapshot is not None
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "reload refused, old policy stays in force: RuntimeError: a loader bug"
    ]


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (fifo, "not a regular file (a FIFO)"),
        (lambda p: Path("/dev/zero"), "not a regular file (a device)"),
        (lambda p: (p.mkdir(), p)[1], "not a regular file (a directory)"),
        (lambda p: (p.write_bytes(b"#" * (2 << 20)), p)[1], "larger than 1048576 bytes, not a config file"),
        (lambda p: (p.write_bytes(b"a: \x80\x81\n"), p)[1], "not"),
    ],
    ids=["fifo", "dev-zero", "directory", "huge", "binary"],
)
def test_config_files_must_be_small_regular_files(tmp_path, make, expected):
    path = make(tmp_path / "f.yaml")
    for load in (load_policy, read_scenario):
        started = time.monotonic()
        with pytest.raises(ConfigError) as e:
            load(path)
        assert time.monotonic() - started < 5
        one_line(str(e.value), str(path))
        assert expected in str(e.value)


def test_policy_check_on_a_fifo_does_not_hang(tmp_path):
    path = fifo(tmp_path / "p.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "cxltierd", "policy", "check", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and result.stderr == f"cxltierd: error: {path}: not a regular file (a FIFO)\n"


@pytest.mark.parametrize(
    ("regex", "why"),
    [
        ("^(a+)+$", "a repeat inside a repeat (like (a+)+)"),
        ("(x*y?)*z", "a repeat inside a repeat (like (a+)+)"),
        ("(a|ab)*c", "alternatives inside a repeat that can start alike (like (a|ab)*)"),
        (r"(\w+) \1", "a backreference"),
        (".*a.*b.*c", "more than 2 unbounded or long repeats (like .*a.*b.*c)"),
        ("a{1,100}b{1,100}c{1,100}", "more than 2 unbounded or long repeats (like .*a.*b.*c)"),
    ],
)
def test_regex_selectors_that_can_backtrack_without_bound_are_refused(regex, why):
    message = policy_error(f"processes: {{manage: [{{regex: '{regex}'}}]}}")
    one_line(message, "p.yaml")
    assert message.startswith("p.yaml: processes.manage[0].regex: regular expression ")
    assert message.endswith(f"could take very long on a hostile command line: {why}")


def test_regex_selectors_of_the_usual_kinds_are_accepted_and_bounded():
    good = ["vllm .*serve", r"python3? .*train\.py", r"[0-9]+\.[0-9]+", "(?:ab|cd)*x", "((ab){3})+", "^java .*-Xmx"]
    text = "processes: {manage: [" + ", ".join(f"{{regex: '{r}'}}" for r in good) + "]}"
    selectors = parse_policy(text, "p.yaml").processes.manage
    assert [s.regex for s in selectors] == good
    worst = parse_policy("processes: {manage: [{regex: '.*x.*z'}]}", "p.yaml").processes.manage[0]
    hostile = "x" * 200_000  # a command line any user can give a process
    started = time.monotonic()
    assert not worst.matches(1, "x", hostile, "/")
    assert time.monotonic() - started < 2
    assert worst.matches(1, "x", "x" * 500 + "z", "/") and not worst.matches(1, "x", "x" * 600 + "z", "/")
    assert policy_error("processes: {pin: [{regex: '" + "a" * 300 + "', tier: cxl}]}").endswith(
        "processes.pin[0].regex: a regular expression of at most 256 characters, got 300"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval: 5s\nengine: auto\ninterval: 1s\n", "p.yaml: line 3: key 'interval' is given twice in one mapping"),
        ("hotness: {half_life: 3, half_life: 4}", "p.yaml: line 1: key 'half_life' is given twice in one mapping"),
    ],
)
def test_duplicate_keys_are_refused(text, expected):
    assert policy_error(text) == expected


def test_scenario_size_and_interval_are_bounded(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("4GiB", "1024TiB").replace("64MiB", "1024TiB") + "region_size: 4KiB\n")
    with pytest.raises(ConfigError) as e:
        read_scenario(path)
    assert str(e.value) == (
        f"{path}: processes: 274877906944 regions of 4KiB in all, more than 1048576 "
        "(use a larger region_size or smaller processes)"
    )
    path.write_text(SCENARIO + "interval: 1us\n")
    with pytest.raises(ConfigError, match=r"interval: must be a duration in \[0.01, 3600\] s, got '1us'$"):
        read_scenario(path)


@pytest.mark.parametrize(
    "args",
    [["--duration", "0"], ["--duration", "-5"], ["--interval", "0"], ["--interval", "-1"], ["--interval", "0.001"]],
)
def test_simulate_refuses_durations_and_intervals_out_of_range(args):
    result = CliRunner().invoke(main, ["simulate", "--scenario", "zipf-static", "--no-baselines", *args])
    assert result.exit_code == 2 and "Invalid value for" in result.output and "Traceback" not in result.output


def test_run_ticks_1_runs_one_tick(daemon):
    d, _ = daemon
    d.opts.ticks = 1
    assert d.run() == 0
    assert d.loop.totals.ticks == 1
    assert CliRunner().invoke(main, ["run", "--ticks", "0"]).exit_code == 2


def test_keys_with_newlines_or_control_characters_stay_on_one_line():
    assert policy_error(
        '"a\\nb": 1'
    ) == "p.yaml: 'a\\nb': unknown key 'a\\nb' (valid keys: interval, engine, dry_run, " + (
        "tiers, watermarks, hotness, rate_limit, cooldown, processes, damon, metrics, node_labels, ras, tenants, interleave, objective)"
    )
    assert policy_error('"\\x08": 1').startswith("p.yaml: '\\x08': unknown key")


def test_a_stream_the_yaml_reader_refuses_at_once_is_one_line():
    assert (
        policy_error("\x08")
        == "p.yaml: not valid YAML: unacceptable character #x0008: special characters are not allowed"
    )


def test_a_policy_others_can_write_is_not_trusted(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("interval: 2s\n")
    path.chmod(0o644)
    assert load_policy(path).interval == 2.0
    path.chmod(0o666)
    with pytest.raises(ConfigError) as e:
        load_policy(path)
    assert str(e.value) == f"{path}: policy file is writable by every user (mode 666): not trusted"
    if os.geteuid() == 0:  # only root can give a file away
        path.chmod(0o644)
        os.chown(path, 12345, 12345)
        with pytest.raises(ConfigError) as e:
            load_policy(path)
        assert str(e.value) == f"{path}: policy file is owned by uid 12345, neither root nor uid 0: not trusted"


SECOND_SIGNAL = """
import os, signal, sys, time
from cxltierd.app import Settings, build
from cxltierd.service.daemon import Daemon, FakeClock, Options
import dataclasses
rt, loop = build(Settings(backend="host", root=sys.argv[1], state_dir=sys.argv[2]))
def slow_cleanup():
    os.kill(os.getpid(), signal.SIGTERM)  # a second stop request while cleaning up
    time.sleep(0.2)
    print("cleaned up", flush=True)
rt = dataclasses.replace(rt, cleanup=(*rt.cleanup, slow_cleanup))
print("exit", Daemon(rt, loop, Options(ticks=1), clock=FakeClock()).run(), flush=True)
"""


def test_a_second_signal_does_not_cut_the_cleanup_short(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SECOND_SIGNAL, str(HOSTS / "single-node"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "cleaned up\nexit 0\n", (result.returncode, result.stderr)
