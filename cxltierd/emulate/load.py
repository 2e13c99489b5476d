"""Reading scenarios: a shipped scenario's name (cxltierd/data/scenarios/NAME.yaml) or a YAML file -> Scenario.

The only file I/O of scenarios; the parsing itself is pure (cxltierd.emulate.scenario). A file that cannot be read,
an unknown name or an invalid scenario is a ConfigError with one line that starts with the name given.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

from cxltierd.emulate.host import check_nodes, host_topology
from cxltierd.emulate.scenario import parse_scenario
from cxltierd.emulate.spec import Scenario
from cxltierd.errors import ConfigError
from cxltierd.topology import Topology
from cxltierd.validate import one_line_errors, parse_yaml, read_config


def _scenario_dir() -> Any:
    return resources.files("cxltierd") / "data" / "scenarios"


def scenario_names() -> list[str]:
    """Names of the scenarios shipped in cxltierd/data/scenarios."""
    return sorted(p.name.removesuffix(".yaml") for p in _scenario_dir().iterdir() if p.name.endswith(".yaml"))


def read_scenario(name_or_path: str | Path) -> Scenario:
    """Parse a shipped scenario (by name) or a YAML file, without checking it against its host."""
    text, source = _read(name_or_path)
    with one_line_errors(source):
        return parse_scenario(parse_yaml(text, source), source)


def load_scenario(name_or_path: str | Path, topology: Topology | None = None) -> Scenario:
    """A validated scenario: shipped name or file path. Node ids are checked against `topology`, or against the
    scenario's host (discovered: I/O) when no topology is given."""
    scenario = read_scenario(name_or_path)
    check_nodes(scenario, topology if topology is not None else host_topology(scenario))
    return scenario


def _read(name_or_path: str | Path) -> tuple[str, str]:
    path = Path(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or "/" in str(name_or_path) or path.suffix in (".yaml", ".yml")
    if looks_like_path or path.is_file():
        try:
            return read_config(path, "scenario file").decode("utf-8"), str(name_or_path)
        except UnicodeDecodeError:
            raise ConfigError(f"{name_or_path}: not a text file") from None
    names = scenario_names()
    if str(name_or_path) not in names:
        close = difflib.get_close_matches(str(name_or_path), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{name_or_path}: no such scenario file and not a shipped scenario ({hint}shipped: {', '.join(names)})"
        )
    return (_scenario_dir() / f"{name_or_path}.yaml").read_text(encoding="utf-8"), f"{name_or_path}.yaml"
