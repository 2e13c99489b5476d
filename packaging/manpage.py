#!/usr/bin/env python3
"""cxltierd(8) in troff, generated from the click commands: `python3 packaging/manpage.py [OUT]` (default: stdout).

The .deb installs the generated packaging/cxltierd.8; tests/packaging/test_operator_files.py fails when it is not
what this script makes from the current commands, so run `python3 packaging/manpage.py packaging/cxltierd.8` after
changing a command, an option or a help text.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxltierd import __version__
from cxltierd.cli import main

FILES = (
    ("/etc/cxltierd/policy.yaml", "The policy: tiers, thresholds, engine, rate limit. Reloaded by systemctl reload."),
    (
        "/etc/default/cxltierd",
        "Read by cxltierd.service: CXLTIERD_LISTEN (the --listen address), CXLTIERD_ARGS (more `cxltierd run` "
        "options) and CXLTIERD_SOCKET (the control socket, for every command).",
    ),
    ("/run/cxltierd/cxltierd.sock", "The control socket `status` and `reload` talk to."),
)
SEE_ALSO = r"\fBsystemctl\fR(1), \fBcxl\fR(1), \fBdaxctl\fR(1), \fBnumactl\fR(8), \fBmove_pages\fR(2)"


def text(s: str) -> str:
    """Plain text as troff: backslashes escaped, a line starting with . or ' neutralised."""
    lines = []
    for line in s.replace("\\", r"\e").replace("-", r"\-").splitlines():
        line = line.strip()
        lines.append(r"\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def paragraphs(s: str) -> list[str]:
    """Help text split into paragraphs (click's \\b blocks kept as plain paragraphs)."""
    out = [" ".join(p.replace("\b", "").split()) for p in s.split("\n\n")]
    return [p for p in out if p]


def metavar(p: click.Parameter) -> str:
    """The value an option takes, as the synopsis shows it."""
    if isinstance(p, click.Option) and p.is_flag:
        return ""
    if isinstance(p.type, click.Choice):
        return "{" + "|".join(str(c) for c in p.type.choices) + "}"
    if p.metavar:
        return p.metavar
    if isinstance(p, click.Argument):
        return (p.name or "").upper()
    return p.type.name.upper().removesuffix(" RANGE")  # "integer range" -> INTEGER


def option_lines(p: click.Option) -> list[str]:
    names = ", ".join(rf"\fB{text(n)}\fR" for n in (*p.opts, *p.secondary_opts))
    mv = metavar(p)
    head = names + (rf" \fI{text(mv)}\fR" if mv else "")
    body = " ".join(p.help.split()) if p.help else ""
    if p.show_default and p.default is not None and not p.is_flag:
        body += f" [default: {p.default}]"
    if p.show_envvar and isinstance(p.envvar, str):
        body += f" [env: {p.envvar}]"
    return [".TP", head, text(body)]


def command_section(name: str, cmd: click.Command) -> list[str]:
    out: list[str] = []
    if isinstance(cmd, click.Group):
        for sub_name, sub in sorted(cmd.commands.items()):
            if not sub.hidden:
                out += command_section(f"{name} {sub_name}", sub)
        return out
    args = " ".join(rf"\fI{text(metavar(p))}\fR" for p in cmd.params if isinstance(p, click.Argument))
    out += [f'.SS "{text(name)}"', rf".B {text(name)}", rf"[\fIOPTIONS\fR] {args}".rstrip(), ".PP"]
    for para in paragraphs(cmd.help or ""):
        out += [text(para), ".PP"]
    if cmd.epilog:
        out += [text(" ".join(cmd.epilog.split())), ".PP"]
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden:
            out += option_lines(p)
    return out


def summary(help_text: str) -> str:
    """The NAME line's description: the first sentence, lower-cased first letter, no full stop."""
    first = help_text.strip().split("\n\n")[0].rstrip(".")
    return first[:1].lower() + first[1:]


def manpage() -> str:
    """The whole page."""
    lines = [
        f'.TH CXLTIERD 8 "" "cxltierd {__version__}" "System Administration"',
        ".SH NAME",
        r"cxltierd \- " + text(summary(main.help or "")),
        ".SH SYNOPSIS",
        r".B cxltierd",
        r"\fICOMMAND\fR [\fIOPTIONS\fR]",
        ".br",
        r".B cxltierd",
        r"\fB\-\-version\fR | \fB\-\-help\fR",
        ".SH DESCRIPTION",
        text(
            "cxltierd discovers a host's memory tiers (HBM, DDR, CXL) through sysfs, classifies every NUMA node "
            "into a tier and runs a hot/cold placement loop that promotes hot pages to the fast tier and demotes "
            "cold ones. `cxltierd run` is the daemon (cxltierd.service); the other commands inspect the host, "
            "talk to the daemon over its control socket or simulate. Every command takes --help."
        ),
        ".SH COMMANDS",
        *command_section("cxltierd", main),
        ".SH FILES",
    ]
    for path, what in FILES:
        lines += [".TP", rf"\fI{text(path)}\fR", text(what)]
    lines += [
        ".SH EXIT STATUS",
        text(
            "0 success; 1 the daemon refused or failed a request (reload, status) or doctor found warnings; "
            "2 bad usage, a broken file, a failed start or doctor failures; 3 status found no daemon and printed "
            "a fresh discovery; 130 interrupted."
        ),
        ".SH SEE ALSO",
        SEE_ALSO,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    page = manpage()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(page)
    else:
        sys.stdout.write(page)
