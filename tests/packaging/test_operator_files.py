"""What an operator gets beside the daemon: the man page generated from the commands, bash completion,
/etc/default/cxltierd feeding the unit, and a `systemctl reload` that waits for the daemon's answer."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cxltierd.cli import main
from cxltierd.service.control import request
from tests.integration.daemon import Daemon
from tests.packaging.test_systemd_unit import UNIT, parse_unit

REPO = Path(__file__).resolve().parents[2]
MANPAGE = REPO / "packaging" / "cxltierd.8"
COMPLETION = REPO / "packaging" / "completion" / "cxltierd"
DEFAULTS = REPO / "packaging" / "default" / "cxltierd"


def commands(group: click.Group, prefix: str = "cxltierd") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out.update(commands(cmd, f"{prefix} {name}"))
        else:
            out[f"{prefix} {name}"] = cmd
    return out


def test_the_man_page_is_what_the_generator_makes_of_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "manpage.py")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == MANPAGE.read_text(), "stale: run python3 packaging/manpage.py packaging/cxltierd.8"
    page = MANPAGE.read_text()
    for name, cmd in commands(main).items():
        assert f'.SS "{name}"' in page, name
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert f"\\fB{p.opts[0].replace('-', chr(92) + '-')}\\fR" in page, (name, p.opts[0])
    assert "3 status found no daemon" in page and "/etc/default/cxltierd" in page


def test_the_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff not found: apt-get install groff-base (CI must have it)")
    proc = subprocess.run(
        [groff, "-man", "-ww", "-z", str(MANPAGE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


def complete(words: list[str]) -> list[str]:
    """What bash completion offers after `words` (the last one being completed), through the shipped script."""
    script = (
        f"source {shlex.quote(str(COMPLETION))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_cxltierd_completion cxltierd\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completion_offers_commands_options_and_choices() -> None:
    assert shutil.which("cxltierd", path=str(Path(sys.executable).parent)), "cxltierd is not installed in the venv"
    assert complete(["cxltierd", "st"]) == ["status"]
    assert "--backend" in complete(["cxltierd", "run", "--b"])
    assert complete(["cxltierd", "run", "--backend", ""]) == ["auto", "host", "emulated"]


def assignments(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_]+", key), line
            out[key] = value
    return out


def test_the_default_file_feeds_the_unit() -> None:
    defaults = assignments(DEFAULTS)
    service = parse_unit(UNIT)["Service"]
    exec_start = service["ExecStart"][0]
    for key in defaults:
        assert f"${{{key}}}" in exec_start or f"${key}" in exec_start, key
    # Without the file (EnvironmentFile=-), the unit's default is the shipped value and the command's own default.
    assert f"CXLTIERD_LISTEN={defaults['CXLTIERD_LISTEN']}" in service["Environment"]
    run_listen = next(p for p in main.commands["run"].params if p.name == "listen")
    assert run_listen.default == defaults["CXLTIERD_LISTEN"]
    # The commented-out socket is the variable the commands read.
    assert "#CXLTIERD_SOCKET=/run/cxltierd/cxltierd.sock" in DEFAULTS.read_text()
    socket = next(p for p in main.commands["reload"].params if p.name == "socket_path")
    assert isinstance(socket, click.Option) and socket.envvar == "CXLTIERD_SOCKET"


def test_exec_reload_returns_after_the_reload_and_fails_when_it_is_refused(tmp_path: Path) -> None:
    argv = parse_unit(UNIT)["Service"]["ExecReload"][0].split()
    assert argv[0] == "/usr/bin/cxltierd"
    command = [sys.executable, "-m", "cxltierd", *argv[1:]]
    policy = tmp_path / "policy.yaml"
    policy.write_text("interval: 300ms\n")
    d = Daemon(tmp_path, "--config", str(policy))
    try:
        d.wait_message("READY=1")
        env = dict(os.environ, CXLTIERD_SOCKET=d.control)  # as the unit's EnvironmentFile may set it
        policy.write_text("interval: 700ms\n")
        ok = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
        assert ok.returncode == 0, ok.stderr
        # Already in force when the command returns: nothing to wait for.
        assert request(d.control, "status")["status"]["policy"]["interval"] == pytest.approx(0.7)
        policy.write_text("interval: -1\n")
        bad = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
        assert bad.returncode == 1 and "reload refused" in bad.stderr
        assert request(d.control, "status")["status"]["policy"]["interval"] == pytest.approx(0.7)
    finally:
        d.stop()
