"""The `cxltierd` command: click commands only, no logic."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from cxltierd import __version__, doctor, render
from cxltierd.discovery import discover
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.facts import HostFacts
from cxltierd.hostfs import HostFS
from cxltierd.topology import Topology, classify

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    click.echo(f"cxltierd: error: {message}", err=True)
    sys.exit(code)


def one_line_errors(fn: F) -> F:
    """Report cxltierd's own errors as one line on stderr with exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CxltierdError as e:
            fail(str(e))

    return wrapper  # type: ignore[return-value]


root_option = click.option(
    "--root", default="/", show_default=True, type=click.Path(), help="Read /sys and /proc under this directory."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def load_host(root: str) -> tuple[HostFacts, Topology]:
    """Discover and classify; discovery warnings go to stderr, one line each."""
    facts = discover(HostFS(root))
    for w in facts.warnings:
        click.echo(f"cxltierd: warning: {w}", err=True)
    return facts, classify(facts)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cxltierd")
def main() -> None:
    """Place memory pages on the right tier of a host with HBM, DDR and CXL memory."""


@main.command()
@root_option
@json_option
@one_line_errors
def topology(root: str, as_json: bool) -> None:
    """Show memory nodes with their tiers, CXL devices, regions and dax devices."""
    facts, topo = load_host(root)
    if as_json:
        click.echo(json.dumps(render.topology_json(facts, topo), indent=2))
    else:
        click.echo(render.topology_text(facts, topo))


@main.command()
@root_option
@json_option
@one_line_errors
def status(root: str, as_json: bool) -> None:
    """Short summary: tiers with capacity and free memory, CXL devices and their state."""
    facts, topo = load_host(root)
    if as_json:
        doc = render.topology_json(facts, topo)
        click.echo(json.dumps({"source": "discovery", "tiers": doc["tiers"], "cxl": doc["cxl"]}, indent=2))
    else:
        click.echo(render.status_text(facts, topo))


@main.command(name="doctor")
@root_option
@json_option
@one_line_errors
def doctor_cmd(root: str, as_json: bool) -> None:
    """Check the host against what CXL tiering needs. Exit 0 ok, 1 warnings, 2 failures."""
    facts, topo = load_host(root)
    try:
        cap_eff = doctor.parse_cap_eff(HostFS("/").read("/proc/self/status"))
    except (HostFSError, ValueError):
        cap_eff = None
    checks = doctor.run_checks(facts, topo, cap_eff)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            line = f"[{c.status:^4}] {c.name}: {c.message}"
            if c.fix and c.status != "ok":
                line += f"\n       fix: {c.fix}"
            click.echo(line)
    sys.exit(doctor.exit_code(checks))
