"""Policy file validation: every error names the file and key path; the shipped example is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxltierd.errors import ConfigError
from cxltierd.policy.schema import Policy, Selector, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]


def error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_policy(text, "p.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("intervall: 5", "p.yaml: intervall: unknown key 'intervall' (did you mean 'interval'?)"),
        (
            "hotness: {hot_treshold: 2}",
            "p.yaml: hotness.hot_treshold: unknown key 'hot_treshold' (did you mean 'hot_threshold'?)",
        ),
        ("interval: fast", "p.yaml: interval: must be a duration: a number of seconds or a string like"),
        ("interval: 0", "p.yaml: interval: must be a duration in [0.01, 3600] s, got 0"),
        (
            "engine: turbo",
            "p.yaml: engine: must be one of auto, simulated, move_pages, damos, numa_balancing, got 'turbo'",
        ),
        (
            "engine: damon",
            "p.yaml: engine: must be one of auto, simulated, move_pages, damos, numa_balancing, got 'damon'"
            " (did you mean 'damos'?)",
        ),
        ("dry_run: maybe", "p.yaml: dry_run: must be true or false, got 'maybe'"),
        ("dry_run: null", "p.yaml: dry_run: must be true or false, got None"),  # null is a value, not "absent"
        (
            "tiers: {fast: [nvme]}",
            "p.yaml: tiers.fast[0]: must be one of hbm, ddr, cxl, cxl-far, pmem, unknown, got 'nvme'",
        ),
        ("tiers: {fast: [ddr], slow: [ddr]}", "p.yaml: tiers.slow: ddr also listed in tiers.fast"),
        ("tiers: {overrides: {x: cxl}}", "p.yaml: tiers.overrides.x: keys must be node ids (0, 1, ...)"),
        (
            "tiers: {overrides: {2: fast}}",
            "p.yaml: tiers.overrides.2: must be one of hbm, ddr, cxl, cxl-far, pmem, unknown, got 'fast'",
        ),
        (
            "watermarks: {ddr: {min_free_percent: 60}}",
            "p.yaml: watermarks.ddr.min_free_percent: must be a number in [0, 50], got 60",
        ),
        (
            "watermarks: {default: {min_free_percent: 20, max_used_percent: 90}}",
            "p.yaml: watermarks.default.max_used_percent: must be at most 100 - min_free_percent = 80, got 90",
        ),
        (
            "watermarks: {nvme: {}}",
            "p.yaml: watermarks.nvme: unknown key 'nvme' (valid keys: default, hbm, ddr, cxl, cxl-far, pmem, unknown)",
        ),
        ("rate_limit: {mb_per_s: 0}", "p.yaml: rate_limit.mb_per_s: must be a number in (0, 1000000], got 0"),
        ("rate_limit: {mb_per_s: [1]}", "p.yaml: rate_limit.mb_per_s: must be a number in (0, 1000000], got [1]"),
        ("hotness: {hysteresis: -1}", "p.yaml: hotness.hysteresis: must be a number in [0, 10], got -1"),
        ("hotness: {hysteresis: '0.5'}", "p.yaml: hotness.hysteresis: must be a number in [0, 10], got '0.5'"),
        ("cooldown: -5s", "p.yaml: cooldown: must be a duration"),
        ("cooldown: 2d", "p.yaml: cooldown: unknown time unit 'd' in '2d'"),
        ("processes: {exclude: [{}]}", "p.yaml: processes.exclude[0]: needs at least one of pid, name, regex, cgroup"),
        ("processes: {manage: [{regex: '(('}]}", "p.yaml: processes.manage[0].regex: invalid regular expression"),
        ("processes: {pin: [{name: redis}]}", "p.yaml: processes.pin[0].tier: is required"),
        ("processes: {pin: [{name: redis, tier: fast}]}", "p.yaml: processes.pin[0].tier: must be one of hbm"),
        ("processes: {manage: {name: x}}", "p.yaml: processes.manage: must be a list, got dict {'name': 'x'}"),
        (
            "processes: {manage: [{pid: 1.5}]}",
            "p.yaml: processes.manage[0].pid: must be an integer in [1, 4194304], got 1.5",
        ),
        ("processes: {min_rss: lots}", "p.yaml: processes.min_rss: must be a size in bytes"),
        ("processes: {min_rss: 2000TiB}", "p.yaml: processes.min_rss: must be a size in [0B, 1024TiB], got '2000TiB'"),
        ("damon: {region_size: 5000}", "p.yaml: damon.region_size: must be a multiple of 4096, got 5000"),
        (
            "damon: {min_regions: 100, max_regions: 10}",
            "p.yaml: damon.max_regions: must be at least damon.min_regions (100)",
        ),
        ("[1, 2]", "p.yaml: must be a mapping, got list [1, 2]"),
        ("interval: [", "p.yaml: line 1: not valid YAML: expected the node content"),
        ("metrics: {process_labels: 1}", "p.yaml: metrics.process_labels: must be true or false, got 1"),
    ],
)
def test_error_messages(text, message):
    assert error(text).startswith(message)


def test_defaults_and_values():
    assert parse_policy("", "p.yaml").interval == pytest.approx(Policy().interval)
    p = parse_policy(
        """
interval: 500ms
engine: move_pages
tiers: {fast: [hbm, 0], overrides: {"3": cxl, 4: pmem}}
watermarks: {default: {min_free_percent: 10, max_used_percent: 80}, hbm: {max_used_percent: 70}}
rate_limit: {mb_per_s: 256, mb_per_interval: 64}
cooldown: 2m
processes: {pin: [{cgroup: /ai.slice, tier: ddr}], min_rss: 1GiB}
damon: {region_size: 4MiB}
""",
        "p.yaml",
    )
    assert p.interval == pytest.approx(0.5) and p.engine == "move_pages" and p.cooldown == pytest.approx(120)
    assert p.tiers.fast == ("hbm", 0) and p.tiers.overrides == {3: "cxl", 4: "pmem"}
    assert p.watermark("hbm").max_used_percent == 70 and p.watermark("hbm").min_free_percent == 10
    assert p.watermark("cxl").max_used_percent == 80
    assert p.budget_bytes() == 64 << 20  # 256 MiB/s * 0.5 s = 128 MiB, capped at 64 MiB
    assert p.processes.min_rss == 1 << 30 and p.damon.region_size == 4 << 20
    assert p.source == "p.yaml" and len(p.digest) == 12


def test_selector_matching():
    s = Selector(cgroup="/ai.slice")
    assert s.matches(1, "x", "", "/ai.slice/vllm.service")
    assert not s.matches(1, "x", "", "/ai.slicer")
    assert Selector(regex=r"vllm\s+serve").matches(1, "python3", "python3 -m vllm serve", "/")
    assert not Selector().matches(1, "x", "", "/")


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read"):
        load_policy(tmp_path / "nope.yaml")


def test_shipped_example_is_valid_and_complete():
    example = REPO / "packaging" / "policy.yaml"
    p = load_policy(example)
    assert p.engine == "auto"
    text = example.read_text()
    # every top-level and nested key of the schema appears in the example
    for key in (
        "interval", "engine", "dry_run", "fast", "slow", "order", "overrides", "watermarks", "min_free_percent",
        "max_used_percent", "hot_threshold", "half_life", "hysteresis", "min_samples", "mb_per_s", "mb_per_interval",
        "cooldown", "manage", "exclude", "pin", "min_rss", "sample_interval", "aggregation_interval",
        "update_interval", "min_regions", "max_regions", "region_size", "process_labels",
    ):  # fmt: skip
        assert f"{key}:" in text, key
