"""`policy check` reports every problem of a policy file in one run, each with file, line and key path, in file
order; it accepts exactly the files the daemon's loader accepts."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxltierd.cli import main
from cxltierd.errors import ConfigError
from cxltierd.policy.check import check_policy, key_lines
from cxltierd.policy.schema import parse_policy

REPO = Path(__file__).resolve().parents[2]

BAD = """\
interval: -1
engine: turbo
hotness:
  half_lfe: 3
  hysteresis: x
tiers:
  fast: [ddr, nope]
  overrides: {x: cxl, 2: xxx}
processes:
  pin:
    - {tier: cxl}
    - {name: a, tier: bogus}
  min_rss: lots
damon:
  min_regions: 50
  max_regions: 20
bogus: 1
ras:
  enabled: maybe
  corrected_per_hour: {degraded: 10, failing: 5}
tenants:
  - {name: a, match: {cgroup: /x}, fast_min: lots, class: vip}
"""

EXPECTED = [
    ("1", "interval", "must be a duration"),
    ("2", "engine", "must be one of auto"),
    ("4", "hotness.half_lfe", "unknown key 'half_lfe' (did you mean 'half_life'?)"),
    ("5", "hotness.hysteresis", "must be a number in [0, 10], got 'x'"),
    ("7", "tiers.fast[1]", "got 'nope'"),
    ("8", "tiers.overrides.x", "keys must be node ids"),
    ("8", "tiers.overrides.2", "got 'xxx'"),
    ("11", "processes.pin[0]", "needs at least one of pid, name, regex, cgroup"),
    ("12", "processes.pin[1].tier", "got 'bogus'"),
    ("13", "processes.min_rss", "must be a size"),
    ("16", "damon.max_regions", "must be at least damon.min_regions (50)"),
    ("17", "bogus", "unknown key 'bogus'"),
    ("19", "ras.enabled", "must be true or false"),
    ("20", "ras.corrected_per_hour.failing", "must be >= degraded (10), got 5"),
    ("22", "tenants[0].fast_min", "must be a size"),
    ("22", "tenants[0].class", "got 'vip'"),
]


def test_every_problem_with_line_and_key_path_in_file_order(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(BAD)
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == len(EXPECTED), result.stderr
    for line, (n, key, what) in zip(lines, EXPECTED, strict=True):
        assert line.startswith(f"cxltierd: error: {path}: line {n}: {key}: "), line
        assert what in line, line
    assert result.stdout == ""


def test_the_daemons_first_problem_is_among_them():
    with_lines = check_policy(BAD.encode(), "p.yaml")
    try:
        parse_policy(BAD, "p.yaml")
    except ConfigError as e:
        assert str(e) in [re.sub(r": line \d+", "", x) for x in with_lines]
    else:
        raise AssertionError("parse_policy accepted a bad file")


def test_one_problem_and_a_syntax_error_are_one_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("rate_limit:\n  mb_per_s: 0\n")
    one = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert one.exit_code == 2
    assert (
        one.stderr == f"cxltierd: error: {path}: line 2: rate_limit.mb_per_s: must be a number in (0, 1000000], got 0\n"
    )
    path.write_text("a: [\n")
    syntax = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert syntax.exit_code == 2 and syntax.stderr.count("\n") == 1 and "line 2: not valid YAML" in syntax.stderr


def test_key_lines_name_keys_and_list_items():
    lines = key_lines(b"tiers:\n  overrides:\n    3: cxl\nprocesses:\n  pin:\n  - name: a\n    tier: ddr\n")
    assert lines["tiers"] == 1 and lines["tiers.overrides.3"] == 3
    assert lines["processes.pin[0]"] == 6 and lines["processes.pin[0].tier"] == 7


POLICY = yaml.safe_load((REPO / "packaging/policy.yaml").read_text()) or {}
POLICY.setdefault("processes", {}).update({"pin": [{"name": "redis", "tier": "ddr"}, {"pid": 1, "tier": "cxl"}]})
BAD_VALUES = [-1, 0, 1e9, "x", "cxl", None, True, [], {}, {"x": 1}, [1, "a"], "5s", "²", "(a+)+"]


def _paths(doc, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=150, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_accepts_exactly_what_the_loader_accepts(data):
    doc = copy.deepcopy(POLICY)
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(_paths(doc)))
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(BAD_VALUES)))
    text = yaml.safe_dump(doc).encode()
    problems = check_policy(text, "p.yaml")
    assert all(p.startswith("p.yaml: ") and "\n" not in p for p in problems)
    try:
        parse_policy(text, "p.yaml")
    except ConfigError as e:
        unlined = [re.sub(r": line \d+", "", x) for x in problems]
        assert re.sub(r": line \d+", "", str(e)) in unlined, (str(e), problems)
    else:
        assert problems == []
