"""Scenario files: parsing, validation messages, shipped scenarios, and the size/duration helpers."""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

import pytest
import yaml

from cxltierd.emulate.host import check_nodes, host_topology, simulated_topology
from cxltierd.emulate.load import load_scenario, read_scenario, scenario_names
from cxltierd.emulate.scenario import parse_scenario
from cxltierd.emulate.spec import Burst, Growth, Placement, Zipf
from cxltierd.errors import ConfigError
from cxltierd.units import format_size, parse_seconds, parse_size

PLACEMENT = ["bursty-tenants", "hotset-shift", "kv-cache-growth", "moe-experts", "training-phases", "zipf-static"]
TENANTS = ["tenants-growth-cap", "tenants-latency-batch", "tenants-weighted"]  # run by benchmarks/tenants.py
SHIPPED = sorted(PLACEMENT + TENANTS)
CONTENTION = ["bandwidth-scan", "three-tier"]  # bandwidth and three tiers (issue 13), not capacity
RAS = ["cxl-expander-failure", "hotset-failover"]  # a CXL node degrading then failing (tests/integration/test_ras_*.py)

BASE: dict[str, Any] = {
    "name": "t",
    "nodes": {0: "64MiB", 1: {"capacity": "64MiB", "used": "8MiB"}, 2: "256MiB"},
    "processes": [
        {"name": "a", "size": "32MiB", "phases": [{"pattern": "uniform", "rate": 100}]},
        {
            "name": "b",
            "size": "16MiB",
            "phases": [
                {"pattern": "uniform", "rate": 10},
                {"at": 5, "pattern": "zipf", "skew": 1.0, "rate": 1000},
            ],
        },
    ],
}


def with_(path: str, value: object) -> dict:
    """BASE with one value set at a dotted path ("processes.1.phases.1.skew")."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    target: object = data
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]  # type: ignore[index]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value  # type: ignore[index]
    return data


def error(data: object) -> str:
    with pytest.raises(ConfigError) as e:
        parse_scenario(data, "scenario.yaml")
    return str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# Shipped scenarios.


def test_shipped_names():
    assert scenario_names() == sorted(SHIPPED + CONTENTION + RAS)


@pytest.mark.parametrize("name", PLACEMENT)
def test_shipped_scenarios_load_and_make_placement_matter(name):
    s = load_scenario(name)
    assert s.name == name and s.host == "default" and s.source == f"{name}.yaml"
    assert s.duration == pytest.approx(600) and s.interval == pytest.approx(1) and s.region_size == 2 << 20
    topo = simulated_topology(s, host_topology(s))
    fast = sum(s.node(n).capacity - s.node(n).used for n in topo.tiers[0].nodes)
    total = sum(p.size for p in s.processes)
    assert total > 1.5 * fast  # the total does not fit in the fast tier
    assert total // s.region_size < 4000  # small enough to simulate quickly


def test_contention_scenarios_load_on_their_hosts():
    scan, three = load_scenario("bandwidth-scan"), load_scenario("three-tier")
    assert scan.host == "default" and three.host == "xeon-max-cxl"
    assert [t.name for t in simulated_topology(three, host_topology(three)).tiers] == ["hbm", "ddr", "cxl"]
    rate = sum(p.phases[0].pattern.rate for p in scan.processes)  # type: ignore[attr-defined]
    assert rate * 64 > 0.8 * 150e9  # the scan uses most of the DDR node's HMAT bandwidth


def test_unknown_scenario_name_lists_shipped():
    with pytest.raises(ConfigError) as e:
        load_scenario("zipf-statc")
    msg = str(e.value)
    assert msg.startswith("zipf-statc: ")
    assert "did you mean 'zipf-static'?" in msg
    assert "shipped: " + ", ".join(sorted(SHIPPED + CONTENTION + RAS)) in msg


def test_load_from_file_names_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(with_("duration", "10m")))
    s = load_scenario(str(path))
    assert s.duration == pytest.approx(600.0) and s.source == str(path)
    path.write_text(yaml.safe_dump(with_("durration", 5)))
    with pytest.raises(
        ConfigError, match=rf"^{path}: durration: unknown key 'durration' \(did you mean 'duration'\?\)$"
    ):
        load_scenario(str(path))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nnodes: {0: 1GiB\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line \d+: not valid YAML"):
        read_scenario(str(path))


def test_missing_file():
    with pytest.raises(ConfigError, match=r"^/nonexistent/s\.yaml: cannot read scenario file"):
        read_scenario("/nonexistent/s.yaml")


# ---------------------------------------------------------------------------------------------------------------
# Parsing and defaults.


def test_defaults_and_pids():
    data = with_("processes.1.pid", 1000)
    s = parse_scenario(data, "scenario.yaml")
    assert [p.pid for p in s.processes] == [1001, 1000]  # auto pids skip explicit ones
    a = s.processes[0]
    assert a.cgroup == "/" and a.cmdline == "a" and a.start_at == 0 and a.exit_at is None
    assert a.placement == Placement("first-touch")
    assert a.phases[0].at == 0
    zipf = s.processes[1].phases[1].pattern
    assert type(zipf) is Zipf and asdict(zipf) == pytest.approx(asdict(Zipf(rate=1000, skew=1.0)))
    assert s.seed == 1 and s.interval == pytest.approx(1.0) and s.duration == pytest.approx(600.0)
    assert s.migration_bandwidth == 2 << 30 and s.sample_fraction == pytest.approx(0.01)
    assert s.node(1).used == 8 << 20 and s.node(2).capacity == 256 << 20
    assert s.host == "default" and s.events == ()


def test_patterns_parse():
    data = with_(
        "processes.0.phases",
        [
            {
                "pattern": "burst",
                "period": "10s",
                "duty": 0.2,
                "rate": "1e6",
                "offset": "500ms",
            }
        ],
    )
    data["processes"].append(
        {
            "name": "kv",
            "size": "16MiB",
            "placement": {"node": 2},
            "phases": [
                {"pattern": "growth", "grow_rate": "4MiB/s", "region_rate": 10, "half_life": "1m", "wrap": True}
            ],
        }
    )
    s = parse_scenario(data, "scenario.yaml")
    burst = s.processes[0].phases[0].pattern
    want = Burst(period=10, duty=0.2, rate=1e6, offset=0.5)
    assert type(burst) is Burst and asdict(burst) == pytest.approx(asdict(want))
    kv = s.processes[2]
    assert kv.placement == Placement("node", 2)
    assert kv.growth == Growth(grow_rate=4 << 20, region_rate=10, half_life=60, wrap=True)


# ---------------------------------------------------------------------------------------------------------------
# Validation messages.


def test_unknown_top_key_suggests():
    assert error(with_("migration_bandwith", 1)) == (
        "scenario.yaml: migration_bandwith: unknown key 'migration_bandwith' (did you mean 'migration_bandwidth'?)"
    )


def test_unknown_nested_key_suggests():
    data = with_("processes.1.phases.1.skw", 1.0)
    assert error(data) == "scenario.yaml: processes[1].phases[1].skw: unknown key 'skw' (did you mean 'skew'?)"


def test_unknown_key_without_close_match_lists_valid():
    msg = error(with_("processes.0.zzz", 1))
    assert msg == (
        "scenario.yaml: processes[0].zzz: unknown key 'zzz' "
        "(valid keys: name, pid, cgroup, cmdline, size, placement, start_at, exit_at, phases)"
    )


def test_wrong_type_names_path_and_range():
    assert error(with_("processes.1.phases.1.skew", "x")) == (
        "scenario.yaml: processes[1].phases[1].skew: must be a number in (0, 5], got 'x'"
    )


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("processes.1.phases.1.skew", 7, "processes[1].phases[1].skew: must be a number in (0, 5], got 7"),
        ("processes.1.phases.1.skew", 0, "processes[1].phases[1].skew: must be a number in (0, 5], got 0"),
        ("processes.0.phases.0.rate", -1, "processes[0].phases[0].rate: must be a number in [0, 1e+12], got -1"),
        ("sample_fraction", 2, "sample_fraction: must be a number in [0, 1], got 2"),
        ("seed", 1.5, "seed: must be an integer >= 0, got 1.5"),
        ("seed", True, "seed: must be an integer >= 0, got True"),
        ("processes.0.pid", 1.5, "processes[0].pid: must be an integer in [1, 4194304], got 1.5"),
        ("interval", 0, "interval: must be a duration in [0.01, 3600] s, got 0"),
        ("interval", "1us", "interval: must be a duration in [0.01, 3600] s, got '1us'"),
        ("duration", "5 fortnights", "duration: unknown time unit 'fortnights'"),
        ("region_size", "3000", "region_size: must be a size in [4KiB, 1GiB], got '3000'"),
        ("region_size", "6KiB", "region_size: must be a multiple of 4096"),
        ("processes.0.size", "lots", "processes[0].size: must be a size in bytes"),
        ("processes.0.size", "32XB", "processes[0].size: unknown size unit 'XB'"),
        ("processes.0.name", "", "processes[0].name: must be a non-empty string"),
        ("processes.0.exit_at", 0, "processes[0].exit_at: must be a duration"),
        (
            "processes.0.placement",
            "interleaved",
            "processes[0].placement: must be one of first-touch, interleave, slow or {node: N}, got 'interleaved'"
            " (did you mean 'interleave'?)",
        ),
        ("processes.0.phases", [], "processes[0].phases: must list at least one phase"),
        ("processes.0.phases", "uniform", "processes[0].phases: must be a list, got str 'uniform'"),
        ("processes", [], "processes: must list at least one process"),
        ("nodes", {}, "nodes: must be a mapping of node id -> capacity"),
        ("nodes", {"x": "1GiB"}, "nodes.x: node ids must be integers >= 0"),
        ("nodes", {0: {"capacity": "1GiB", "used": "2GiB"}}, "nodes.0.used: must be a size in [0B, 1GiB], got '2GiB'"),
        ("wrap", None, "wrap: unknown key 'wrap' (valid keys: name, description, duration, interval, seed"),
    ],
)
def test_out_of_range_and_wrong_types(path, value, expected):
    msg = error(with_(path, value))
    assert msg.startswith("scenario.yaml: ")
    assert expected in msg, msg


def test_missing_required_key():
    data = copy.deepcopy(BASE)
    del data["processes"][0]["size"]
    assert error(data) == "scenario.yaml: processes[0].size: is required"
    assert error({"nodes": {0: "1GiB"}}) == "scenario.yaml: processes: is required"
    assert error("just a string") == "scenario.yaml: must be a mapping, got str 'just a string'"


def test_unknown_pattern_suggests():
    msg = error(with_("processes.0.phases.0.pattern", "zipff"))
    assert msg == (
        "scenario.yaml: processes[0].phases[0].pattern: must be one of zipf, hotset, growth, burst, groups, uniform, "
        "got 'zipff' (did you mean 'zipf'?)"
    )
    msg = error(with_("processes.0.phases.0.pattern", "sawtooth"))
    assert msg == (
        "scenario.yaml: processes[0].phases[0].pattern: must be one of zipf, hotset, growth, burst, groups, uniform, "
        "got 'sawtooth'"
    )


def test_pattern_keys_are_per_pattern():
    # "skew" belongs to zipf, not uniform
    msg = error(with_("processes.0.phases.0.skew", 1.0))
    assert msg.startswith("scenario.yaml: processes[0].phases[0].skew: unknown key 'skew'")


def test_phase_order_and_growth_alone():
    msg = error(with_("processes.1.phases.1.at", 0))
    assert "processes[1].phases[1].at: phases must start in increasing order" in msg
    data = with_("processes.1.phases.0", {"pattern": "growth", "grow_rate": "1MiB", "region_rate": 1, "half_life": 5})
    assert "processes[1].phases[0]: a growth phase must be the process's only phase" in error(data)
    data = with_("processes.0.start_at", 10)
    data["processes"][0]["phases"][0]["at"] = 5
    assert "processes[0].phases[0].at: the first phase cannot start before the process" in error(data)


def test_shift_needs_period_and_groups_bounds():
    data = with_("processes.1.phases.1.shift", 0.5)
    assert error(data).endswith("processes[1].phases[1].shift: needs shift_period (how often the hot set moves)")
    groups = {"pattern": "groups", "groups": 4, "active": 5, "period": 10, "rate": 1}
    assert "processes[0].phases[0].active: must be an integer in [1, 4], got 5" in error(
        with_("processes.0.phases.0", groups)
    )
    groups = {"pattern": "groups", "groups": 100, "active": 1, "period": 10, "rate": 1}
    assert "processes[0].phases[0].groups: must be an integer in [1, 16], got 100" in error(
        with_("processes.0.phases.0", groups)
    )
    burst = {"pattern": "burst", "period": 10, "duty": 0.5, "offset": 6, "rate": 1}
    assert "processes[0].phases[0].offset: must be a duration" in error(with_("processes.0.phases.0", burst))


def test_unknown_node_in_placement_and_events():
    msg = error(with_("processes.0.placement", {"node": 7}))
    assert msg == "scenario.yaml: processes[0].placement.node: node 7 is not in nodes: (0, 1, 2)"
    msg = error(with_("events", [{"at": 5, "remove_node": 9}]))
    assert msg == "scenario.yaml: events[0].remove_node: node 9 is not in nodes: (0, 1, 2)"


def test_unknown_node_on_host(tmp_path):
    data = with_("nodes", {0: "1GiB", 5: "1GiB"})
    s = parse_scenario(data, "scenario.yaml")
    with pytest.raises(ConfigError) as e:
        check_nodes(s, host_topology(s))
    assert str(e.value) == (
        "scenario.yaml: nodes.5: node 5 is not a memory node of host 'default' (its nodes: 0, 1, 2)"
    )
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"^{path}: nodes.5: node 5 is not a memory node"):
        load_scenario(path)


def test_events_validated_in_time_order():
    ok = parse_scenario(with_("events", [{"at": 20, "add_node": 2}, {"at": 10, "remove_node": 2}]), "scenario.yaml")
    assert [(e.at, e.action, e.node) for e in ok.events] == [(10, "remove", 2), (20, "add", 2)]
    assert "events[0].add_node: node 2 is online at 10 s" in error(with_("events", [{"at": 10, "add_node": 2}]))
    twice = [{"at": 10, "remove_node": 2}, {"at": 20, "remove_node": 2}]
    assert "events[1].remove_node: node 2 is already removed at 20 s" in error(with_("events", twice))
    assert "events[0]: needs exactly one of remove_node: N or add_node: N" in error(with_("events", [{"at": 1}]))


def test_peak_memory_must_fit():
    msg = error(with_("processes.0.size", "400MiB"))
    assert msg.startswith("scenario.yaml: processes: 416MiB of process memory is alive at 0 s, more than the 376MiB")
    # a process that exits before another starts does not add up
    data = with_("processes.0.size", "300MiB")
    data["processes"][0]["exit_at"] = 10
    data["processes"][1]["start_at"] = 10
    data["processes"][1]["size"] = "300MiB"
    data["processes"][1]["phases"][1]["at"] = 15
    parse_scenario(data, "scenario.yaml")


def test_host_must_exist():
    s = parse_scenario(with_("host", "/nonexistent/host"), "scenario.yaml")
    with pytest.raises(ConfigError, match="host: '/nonexistent/host' is neither an embedded host"):
        host_topology(s)


def test_simulated_topology_uses_scenario_capacities():
    s = parse_scenario(with_("nodes", {0: "1GiB", 2: {"capacity": "2GiB", "used": "1GiB"}}), "scenario.yaml")
    topo = simulated_topology(s, host_topology(s))
    assert topo.node_ids == (0, 2)
    assert [(t.name, t.rank, t.nodes) for t in topo.tiers] == [("ddr", 0, (0,)), ("cxl", 1, (2,))]
    assert topo.node(2).total_bytes == 2 << 30 and topo.node(2).free_bytes == 1 << 30


# ---------------------------------------------------------------------------------------------------------------
# units.py


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("512MiB", 512 << 20),
        ("4GiB", 4 << 30),
        ("4 GiB", 4 << 30),
        ("2MB", 2_000_000),
        ("1.5G", 3 << 29),
        ("2Mi", 2 << 20),
        ("16MiB/s", 16 << 20),
        ("1kb", 1000),
        (1e3, 1000),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "must be a size"),
        ("-1MiB", "must be a size"),
        (-5, "not negative"),
        ("3 parsecs", "unknown size unit"),
        (True, "must be a size"),
        (None, "must be a size"),
        (float("inf"), "not negative"),
    ],
)
def test_parse_size_errors(value, message):
    with pytest.raises(ValueError, match=message):
        parse_size(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(5, 5.0), (0.5, 0.5), ("5s", 5.0), ("2m", 120.0), ("500ms", 0.5), ("1h", 3600.0), ("250us", 0.00025), ("7", 7.0)],
)
def test_parse_seconds(text, expected):
    assert parse_seconds(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "must be a duration"),
        (-1, "not negative"),
        ("3 days", "unknown time unit"),
        (False, "must be a duration"),
    ],
)
def test_parse_seconds_errors(value, message):
    with pytest.raises(ValueError, match=message):
        parse_seconds(value)


def test_format_size():
    assert [format_size(n) for n in (2 << 20, 3 << 29, 1000, 4 << 40)] == ["2MiB", "1.5GiB", "1000B", "4TiB"]
