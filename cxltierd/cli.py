"""The `cxltierd` command: click commands only; the work is in the modules they call."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from cxltierd import __version__, logs
from cxltierd.discovery import discover
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.facts import HostFacts
from cxltierd.hostfs import HostFS
from cxltierd.report import doctor, host, simulation
from cxltierd.report import status as live
from cxltierd.service.control import DEFAULT_SOCKET, ControlError, request, socket_dir_exists
from cxltierd.topology import Topology, classify

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("cxltierd")


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit with `code`."""
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
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


root_option = click.option(
    "--root", default="/", show_default=True, type=click.Path(), help="Read /sys and /proc under this directory."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
socket_option = click.option(
    "--socket",
    "socket_path",
    default=DEFAULT_SOCKET,
    show_default=True,
    metavar="PATH",
    envvar="CXLTIERD_SOCKET",
    show_envvar=True,
    help="The daemon's control socket.",
)


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
        click.echo(json.dumps(host.topology_json(facts, topo), indent=2))
    else:
        click.echo(host.topology_text(facts, topo))


@main.command(name="cxl")
@root_option
@click.option("-M", "--memdevs", "memdevs", is_flag=True, help="List memdevs.")
@click.option("-D", "--decoders", "decoders", is_flag=True, help="List decoders.")
@click.option("-R", "--regions", "regions", is_flag=True, help="List regions.")
@click.option("-i", "--idle", is_flag=True, help="Also disabled and unsized objects.")
@one_line_errors
def cxl_cmd(root: str, memdevs: bool, decoders: bool, regions: bool, idle: bool) -> None:
    """CXL memdevs, decoders and regions as JSON shaped like ndctl's `cxl list` (all three when none is asked)."""
    from cxltierd.report.cxl_list import cxl_list

    if not (memdevs or decoders or regions):
        memdevs = decoders = regions = True
    facts, _ = load_host(root)
    click.echo(json.dumps(cxl_list(facts, memdevs=memdevs, decoders=decoders, regions=regions, idle=idle), indent=2))


@main.command()
@socket_option
@click.option(
    "--interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option("--once", is_flag=True, help="Draw one screen and exit (exit 3 when no daemon answers).")
@one_line_errors
def top(socket_path: str, interval: float, once: bool) -> None:
    """A live view of the daemon: tiers used/free/hot, moves per second, failures, engine and health; q quits."""
    from cxltierd.service.top import run_top

    sys.exit(run_top(socket_path, interval, once=once))


NO_DAEMON = 3  # `status`: no daemon answered on the socket; what was printed is a fresh discovery


@main.command(
    epilog=f"Exit status: 0 the daemon's state (or --root's discovery), 1 the daemon answered with an "
    f"error, 2 bad usage or discovery failed, {NO_DAEMON} no daemon answered on the socket (a fresh discovery "
    "was printed instead)."
)
@click.option("--root", default=None, type=click.Path(), help="Skip the daemon: discover under this directory.")
@socket_option
@json_option
@one_line_errors
def status(root: str | None, socket_path: str, as_json: bool) -> None:
    """The daemon's live state; without a daemon, a fresh discovery (said so, exit 3)."""
    code = 0
    if root is None:
        try:
            reply = request(socket_path, "status", timeout=10)
        except ControlError as e:
            click.echo(f"cxltierd: {e}; showing a fresh discovery instead", err=True)
            code = NO_DAEMON
        else:
            if not reply.get("ok"):
                fail(f"daemon: {reply.get('error')}", 1)
            doc = reply["status"]
            click.echo(json.dumps(doc, indent=2) if as_json else live.live_status_text(doc))
            return
    facts, topo = load_host(root or "/")
    if as_json:
        doc = host.topology_json(facts, topo)
        click.echo(json.dumps({"source": "discovery", "tiers": doc["tiers"], "cxl": doc["cxl"]}, indent=2))
    else:
        click.echo(host.status_text(facts, topo))
    sys.exit(code)


@main.command()
@click.argument("node", type=click.IntRange(0, 4095))
@socket_option
@one_line_errors
def drain(node: int, socket_path: str) -> None:
    """Ask the daemon to drain NODE: no placement into it, its pages moved to healthy nodes (RAS)."""
    _ras_request("drain", node, socket_path)


@main.command()
@click.argument("node", type=click.IntRange(0, 4095))
@socket_option
@one_line_errors
def undrain(node: int, socket_path: str) -> None:
    """Ask the daemon to stop draining NODE and mark its CXL memdevs healthy again (RAS)."""
    _ras_request("undrain", node, socket_path)


def _ras_request(command: str, node: int, socket_path: str) -> None:
    try:
        reply = request(socket_path, command, node=node)
    except ControlError as e:
        fail(str(e), 1)
    if not reply.get("ok"):
        fail(f"{command} refused: {reply.get('error')}", 1)
    click.echo(reply.get("note") or f"{command} of node {node} requested")


@main.command()
@socket_option
@one_line_errors
def reload(socket_path: str) -> None:
    """Ask the daemon to reload its policy; prints the result (exit 1 when refused)."""
    try:
        reply = request(socket_path, "reload")
    except ControlError as e:
        fail(str(e), 1)
    if reply.get("ok"):
        click.echo(f"reloaded {reply.get('policy')} (sha256 {reply.get('digest')})")
    else:
        fail(f"reload refused: {reply.get('error')}", 1)


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
    from cxltierd.app import STATE_DIR
    from cxltierd.discovery import pmu, tracefs
    from cxltierd.engines.registry import probe_env, probes
    from cxltierd.report.bandwidth import bandwidth_checks
    from cxltierd.report.ras import ras_checks

    env = probe_env(HostFS(root), facts, Path(STATE_DIR))
    checks = doctor.run_checks(facts, topo, cap_eff, probes(env), env.damon)
    checks += ras_checks(tracefs.probe(HostFS(root)))
    checks += bandwidth_checks(pmu.find(HostFS(root), facts))
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            line = f"[{c.status:^4}] {c.name}: {c.message}"
            if c.fix and c.status != "ok":
                line += f"\n       fix: {c.fix}"
            if c.persist and c.status != "ok":
                line += f"\n       persist: {c.persist}"
            click.echo(line)
    sys.exit(doctor.exit_code(checks))


@main.group()
def policy() -> None:
    """Policy files."""


@policy.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--root", default=None, type=click.Path(), help="Also check tenants' guarantees against this host's fast tier."
)
def policy_check(file: str, root: str | None) -> None:
    """Validate a policy file: exit 0 when valid, 2 with one line per problem (every problem, in file order)."""
    from cxltierd.policy.check import check_policy
    from cxltierd.policy.roles import fast_capacity
    from cxltierd.policy.schema import load_policy
    from cxltierd.policy.tenants import check_fit
    from cxltierd.validate import read_config

    try:
        problems = check_policy(read_config(file, "policy file", owned=True), file)
        for line in problems[:-1]:
            click.echo(f"cxltierd: error: {line}", err=True)
        if problems:
            fail(problems[-1])
        p = load_policy(file)
        if root is not None and p.tenants:
            facts, _ = load_host(root)
            check_fit(p.tenants, fast_capacity(classify(facts, p.tiers.overrides), p), file)
    except CxltierdError as e:
        fail(str(e))
    click.echo(f"{file}: ok (engine {p.engine}, interval {p.interval:g}s, sha256 {p.digest})")


@policy.command("explain")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--pid", "pids", type=click.IntRange(min=1), multiple=True, required=True, help="A process (repeatable).")
@root_option
@one_line_errors
def policy_explain(file: str, pids: tuple[int, ...], root: str) -> None:
    """Show which tenant of the policy each process falls in, and why."""
    from cxltierd.discovery.live import read_process
    from cxltierd.model import Process
    from cxltierd.policy.schema import load_policy
    from cxltierd.policy.tenants import explain

    p = load_policy(file)
    fs = HostFS(root)
    for pid in pids:
        info = read_process(fs, pid)
        if info is None:
            fail(f"pid {pid}: no such user process under {root}")
            return
        for line in explain(p.tenants, Process(info.pid, info.name, info.cmdline, info.cgroup)):
            click.echo(line)


@main.command()
@click.option("--backend", type=click.Choice(["auto", "host", "emulated"]), default="auto", show_default=True)
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="Policy file [/etc/cxltierd/policy.yaml]")
@click.option("--scenario", default=None, help="Emulated backend: a scenario name or YAML file [hotset-failover].")
@click.option("--root", default=None, type=click.Path(), help="Host root (host backend) or host tree (emulated).")
@click.option("--seed", type=int, default=None, help="Emulated backend: random seed.")
@click.option(
    "--listen",
    default="0.0.0.0:9750",
    show_default=True,
    metavar="ADDR:PORT",
    help="/metrics and /healthz ([IPv6]:PORT for IPv6); 'off' disables.",
)
@socket_option
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--once", is_flag=True, help="Run one tick and exit.")
@click.option("--dry-run", is_flag=True, help="Plan and log moves, move nothing.")
@click.option("--ticks", type=click.IntRange(min=1), default=None, help="Exit after this many ticks.")
@click.option("--fake-clock", is_flag=True, hidden=True, help="Simulated time: ticks follow each other at once.")
@click.option("--state-dir", default="/run/cxltierd", hidden=True, help="Where engines record what they own.")
@one_line_errors
def run(
    backend: str,
    config: str | None,
    scenario: str | None,
    root: str | None,
    seed: int | None,
    listen: str,
    socket_path: str,
    log_level: str,
    once: bool,
    dry_run: bool,
    ticks: int | None,
    fake_clock: bool,
    state_dir: str,
) -> None:
    """Run the daemon: discover, classify, and keep memory on the right tier."""
    from cxltierd.app import Settings, build
    from cxltierd.service.daemon import Daemon, FakeClock, Options
    from cxltierd.service.metrics import parse_listen

    logs.setup(log_level)
    try:
        address = None if listen in ("off", "") else parse_listen(listen)
    except ValueError as e:
        fail(str(e))
    socket = None if socket_path in ("off", "") else socket_path
    if socket == DEFAULT_SOCKET and not os.path.isdir(os.path.dirname(socket)):
        # The daemon's own runtime directory (what the unit's RuntimeDirectory= makes): a manual run makes it, 0750.
        os.makedirs(os.path.dirname(socket), mode=0o750, exist_ok=True)
    if socket is not None:
        socket_dir_exists(socket)
    settings = Settings(
        backend=backend, config=config, scenario=scenario, root=root, seed=seed, dry_run=dry_run, state_dir=state_dir
    )
    rt, loop = build(settings)
    opts = Options(listen=address, socket=socket, once=once, ticks=ticks)
    code = Daemon(rt, loop, opts, clock=FakeClock() if fake_clock else None).run()
    sys.exit(code)


@main.command()
@click.option("--scenario", required=True, help="A scenario name or YAML file.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), default=None, help="Policy file.")
@click.option(
    "--duration", type=click.FloatRange(0, 1e7, min_open=True), default=None, help="Simulated seconds [the scenario's]."
)
@click.option("--seed", type=int, default=None)
@click.option(
    "--interval", type=click.FloatRange(0.01, 3600), default=None, help="Loop interval, seconds [the scenario's]."
)
@click.option("--baselines/--no-baselines", default=True, show_default=True, help="Also run the baselines.")
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Draw fast-tier share and bytes moved over time per placer to FILE (.png or .svg; needs cxltierd[plot]).",
)
@click.option(
    "--heatmap",
    "heatmap_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Draw cxltierd's region heat over time against address, per process, to FILE (.png or .svg).",
)
@json_option
@one_line_errors
def simulate(
    scenario: str,
    policy_file: str | None,
    duration: float | None,
    seed: int | None,
    interval: float | None,
    baselines: bool,
    plot_file: str | None,
    heatmap_file: str | None,
    as_json: bool,
) -> None:
    """Run a scenario faster than real time: cxltierd's policy next to the baselines."""
    from cxltierd.emulate.simulate import PLACERS
    from cxltierd.emulate.simulate import run as run_sim
    from cxltierd.policy.schema import Policy, load_policy
    from cxltierd.report import plot

    for option, path in (("--plot", plot_file), ("--heatmap", heatmap_file)):
        if path:
            plot.check(option, path)
    pol = load_policy(policy_file) if policy_file else Policy()
    placers = PLACERS if baselines else ("cxltierd",)
    results = [
        run_sim(scenario, p, pol, seed=seed, duration=duration, interval=interval, heat=bool(heatmap_file))
        if p == "cxltierd"
        else run_sim(scenario, p, pol, seed=seed, duration=duration, interval=interval)
        for p in placers
    ]
    if plot_file:
        plot.plot_runs(scenario, results, plot_file)
    if heatmap_file:
        plot.plot_heatmap(scenario, results[placers.index("cxltierd")], heatmap_file)
    if as_json:
        click.echo(json.dumps([simulation.sim_json(r) for r in results], indent=2))
    else:
        click.echo(simulation.sim_table(scenario, results))
