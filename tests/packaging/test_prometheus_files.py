"""Prometheus alert rules and the Grafana dashboard: valid PromQL, only metrics the daemon exports, alerts that fire.

Needs promtool (apt package: prometheus). A missing tool fails the test: CI installs it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "packaging" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "packaging" / "grafana" / "cxltierd-dashboard.json"


def ras_view() -> Any:
    """A RAS state with every family populated: a failing memdev, its node drained, events and health figures."""
    from cxltierd.failover import RasView
    from cxltierd.ras.drain import DrainProgress
    from cxltierd.ras.health import MemdevHealth

    return RasView(
        enabled=True,
        memdevs={"mem0": MemdevHealth("mem0", state="failing", poison=frozenset({0x40000}))},
        nodes={2: "failing"},
        events={("mem0", "cxl_general_media", "Failure"): 1},
        figures={"mem0": {"life_used": 33}},
        drains={2: DrainProgress(2, 0.0, remaining=10, status="stalled")},
    )


def exported_names() -> set[str]:
    """Every sample name the daemon's collector exports, from a snapshot in which every family is populated."""

    from cxltierd.facts import DaxDevice, HostFacts, Memdev, Region
    from cxltierd.service.metrics import KERNEL_COUNTERS, registry_for
    from cxltierd.service.state import TICK_BUCKETS, ReloadResult, Snapshot
    from cxltierd.topology import Node, Tier, Topology

    topo = Topology(
        nodes=(Node(0, "ddr", "t"), Node(2, "cxl", "t")), tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (2,)))
    )
    snap = Snapshot(
        topology=topo,
        usage={0: (10, 5), 2: (20, 10)},
        available={0: 7, 2: 12},
        migrated_bytes={("cxl", "ddr"): 1},
        migrated_pages={("cxl", "ddr"): 1},
        failures={"busy": 1},
        fast_tier_access_ratio=0.5,
        hot_bytes={"ddr": 1},
        last_tick=1.0,
        ticks=1,
        tick_bucket_counts=(1,) * len(TICK_BUCKETS),
        kernel_counters=dict.fromkeys(KERNEL_COUNTERS, 1),
        facts=HostFacts(
            root="/",
            memdevs=(Memdev("mem0", "/m", host="h", serial=0, firmware_version="1"),),
            regions=(Region("region0", "/r", mode="ram", size=1, dax_region="dax_region0"),),
            dax=(DaxDevice("dax0.0", "/d", "cxl-ram", region="region0", target_node=2),),
        ),
        last_reload=ReloadResult(ok=True, time=1.0),
        ras=ras_view(),
    )
    return {sample.name for family in registry_for(lambda: snap).collect() for sample in family.samples}


ALLOWED = exported_names()
ALERT_NAMES = {
    "CxltierdDown",
    "CxltierdReloadsFailing",
    "CxltierdFastTierNearlyFull",
    "CxltierdMigrationFailuresRising",
    "CxltierdCxlRegionLost",
    "CxltierdLoopStalled",
    "CxltierdCxlMemoryDegraded",
    "CxltierdCxlMemoryFailing",
    "CxltierdCxlDrainStalled",
}
METRIC_RE = re.compile(r"\bcxltierd_[a-z_]+")


def require_tool(name: str, apt_package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it with `apt-get install {apt_package}` (CI must have it)")
    return path


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in panels:
        out.append(p)
        out.extend(all_panels(p.get("panels", [])))
    return out


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in all_panels(dashboard()["panels"]) for t in p.get("targets", []) if "expr" in t]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(query)
    return exprs


def metric_names(expr: str) -> set[str]:
    return set(METRIC_RE.findall(expr))


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so promtool can parse it."""
    return expr.replace("$__rate_interval", "2m").replace("$instance", ".+")


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", "prometheus")
    proc = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in proc.stdout


def test_alerts_are_the_expected_ones_and_documented() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']}: no {key}"


def test_the_failure_runbook_names_the_exported_reasons() -> None:
    """The runbook explains each `reason` label value the daemon exports, and no errno names it never exports."""
    from cxltierd.model import FAILURE_REASONS
    from cxltierd.service.metrics import registry_for
    from cxltierd.service.state import Snapshot
    from cxltierd.topology import Topology

    rule = next(r for r in alert_rules() if r["alert"] == "CxltierdMigrationFailuresRising")
    runbook = rule["annotations"]["runbook"]
    assert [r for r in FAILURE_REASONS if not re.search(rf"\b{r}:", runbook)] == []
    exported = {
        s.labels["reason"]
        for family in registry_for(lambda: Snapshot(topology=Topology(nodes=(), tiers=()))).collect()
        for s in family.samples
        if s.name == "cxltierd_migration_failures_total"
    }
    assert exported == set(FAILURE_REASONS)
    named = set(re.findall(r"\b([a-z_]+):", runbook)) - {"reason"}  # "By reason: busy: ..."
    assert named <= set(FAILURE_REASONS), named - set(FAILURE_REASONS)


def test_alerts_use_only_exported_metrics() -> None:
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - ALLOWED
        assert not unknown, f"{rule['alert']}: {unknown}"
    down = next(r for r in alert_rules() if r["alert"] == "CxltierdDown")
    assert re.search(r"\bup\{", down["expr"]) and "absent(" in down["expr"]


def test_dashboard_uses_only_exported_metrics() -> None:
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"query without a cxltierd metric: {expr}"
        unknown = names - ALLOWED
        assert not unknown, f"{unknown} in {expr}"
        used |= names
    # Every part of the contract the dashboard is meant to show.
    for wanted in (
        "tier_memory_total_bytes",
        "tier_memory_free_bytes",
        "node_memory_free_bytes",
        "fast_tier_access_ratio",
        "hot_bytes",
        "migrated_bytes_total",
        "migration_failures_total",
        "loop_duration_seconds_bucket",
        "policy_last_reload_success",
        "cxl_region_info",
        "cxl_memdev_info",
        "kernel_pgpromote_success_total",
        "kernel_pgdemote_kswapd_total",
    ):
        assert f"cxltierd_{wanted}" in used, wanted


def test_dashboard_structure() -> None:
    d = dashboard()
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert variables["instance"]["datasource"]["uid"] == "${DS_PROMETHEUS}"
    panels = all_panels(d["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            assert 'instance=~"$instance"' in t["expr"], f"{p['title']}: not filtered by $instance"
            assert "[5m]" not in t["expr"] and "[1m]" not in t["expr"], "use $__rate_interval"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule) once Grafana's variables are substituted."""
    promtool = require_tool("promtool", "prometheus")
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(e)} for i, e in enumerate(dashboard_exprs())]
    # label_values() is Grafana's, not PromQL: check its metric selector alone.
    for rule in rules:
        m = re.fullmatch(r"label_values\((\w+), *\w+\)", rule["expr"])
        if m:
            rule["expr"] = m.group(1)
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in {"job": "cxltierd", "instance": "h1:9750", **labels}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def firing(alert: str, at: str, *label_sets: dict[str, str]) -> dict[str, Any]:
    """The alert fires with exactly these label sets (checked on ALERTS, so annotations need not be spelled out)."""
    return {
        "expr": f'ALERTS{{alertname="{alert}", alertstate="firing"}}',
        "eval_time": at,
        "exp_samples": [
            {"labels": _labels({"__name__": "ALERTS", "alertname": alert, "alertstate": "firing", **ls}), "value": 1}
            for ls in label_sets
        ],
    }


def _labels(labels: dict[str, str]) -> str:
    name = labels.pop("__name__")
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def test_alerts_fire_on_synthetic_series(tmp_path: Path) -> None:
    """promtool test rules: each alert fires on the failure it describes and stays quiet on a healthy host."""
    promtool = require_tool("promtool", "prometheus")
    host = {"job": "cxltierd", "instance": "h1:9750"}
    up = series("up", {}, "1x90")
    build = series("cxltierd_build_info", {"version": "0.1.0"}, "1x90")
    region0 = {"region": "region0", "mode": "ram", "node": "2"}
    region1 = {"region": "region1", "mode": "ram", "node": "3"}
    cases: list[dict[str, Any]] = [
        {  # healthy: nothing fires
            "input_series": [
                up,
                build,
                series("cxltierd_last_tick_timestamp_seconds", {}, "0+60x90"),
                series("cxltierd_policy_last_reload_success", {}, "1x90"),
                series("cxltierd_policy_reloads_total", {"result": "failure"}, "0x90"),
                series("cxltierd_policy_reloads_total", {"result": "success"}, "0+1x90"),
                series("cxltierd_tier_memory_free_bytes", {"tier": "ddr"}, "50x90"),
                series("cxltierd_tier_memory_total_bytes", {"tier": "ddr"}, "100x90"),
                series("cxltierd_tier_memory_free_bytes", {"tier": "cxl"}, "1x90"),
                series("cxltierd_tier_memory_total_bytes", {"tier": "cxl"}, "100x90"),
                series("cxltierd_migration_failures_total", {"reason": "busy"}, "0+6x90"),
                series("cxltierd_cxl_region_info", region0, "1x90"),
            ],
            "alert_rule_test": [quiet(a, "80m") for a in sorted(ALERT_NAMES)],
        },
        {  # target down, then no target at all
            "input_series": [series("up", {}, "1 1 0x30")],
            "alert_rule_test": [quiet("CxltierdDown", "5m")],
            "promql_expr_test": [
                firing("CxltierdDown", "20m", {**host, "severity": "critical"}),
                firing("CxltierdDown", "60m", {"job": "cxltierd", "severity": "critical"}),
            ],
        },
        {  # a broken policy file
            "input_series": [
                up,
                build,
                series("cxltierd_policy_last_reload_success", {}, "1x10 0x20"),
                series("cxltierd_policy_reloads_total", {"result": "failure"}, "0x10 1x20"),
            ],
            "alert_rule_test": [quiet("CxltierdReloadsFailing", "9m")],
            "promql_expr_test": [firing("CxltierdReloadsFailing", "20m", {**host, "severity": "warning"})],
        },
        {  # one failed reload between good ones still shows for a while
            "input_series": [
                up,
                build,
                series("cxltierd_policy_last_reload_success", {}, "1x10 0 1x30"),
                series("cxltierd_policy_reloads_total", {"result": "failure"}, "0x10 1x31"),
            ],
            "promql_expr_test": [firing("CxltierdReloadsFailing", "15m", {**host, "severity": "warning"})],
            "alert_rule_test": [quiet("CxltierdReloadsFailing", "40m")],
        },
        {  # the fast (ddr) tier full fires; a full cxl tier does not
            "input_series": [
                up,
                build,
                series("cxltierd_node_info", {"node": "0", "tier": "ddr", "kind": "ddr", "rank": "0"}, "1x60"),
                series("cxltierd_node_memory_available_bytes", {"node": "0"}, "3x60"),
                series("cxltierd_node_info", {"node": "2", "tier": "cxl", "kind": "cxl", "rank": "1"}, "1x60"),
                series("cxltierd_node_memory_available_bytes", {"node": "2"}, "1x60"),
                series("cxltierd_tier_memory_free_bytes", {"tier": "ddr"}, "3x60"),
                series("cxltierd_tier_memory_total_bytes", {"tier": "ddr"}, "100x60"),
                series("cxltierd_tier_memory_free_bytes", {"tier": "cxl"}, "1x60"),
                series("cxltierd_tier_memory_total_bytes", {"tier": "cxl"}, "100x60"),
            ],
            "promql_expr_test": [
                firing("CxltierdFastTierNearlyFull", "30m", {**host, "tier": "ddr", "severity": "warning"})
            ],
        },
        {  # DDR's MemFree is low but page cache makes up most of it: available memory is ample, nothing fires
            "input_series": [
                up,
                build,
                series("cxltierd_node_info", {"node": "0", "tier": "ddr", "kind": "ddr", "rank": "0"}, "1x60"),
                series("cxltierd_node_memory_available_bytes", {"node": "0"}, "60x60"),
                series("cxltierd_tier_memory_free_bytes", {"tier": "ddr"}, "2x60"),
                series("cxltierd_tier_memory_total_bytes", {"tier": "ddr"}, "100x60"),
            ],
            "alert_rule_test": [quiet("CxltierdFastTierNearlyFull", "40m")],
        },
        {  # migrations failing at 20/s
            "input_series": [
                up,
                build,
                series("cxltierd_migration_failures_total", {"reason": "target_full"}, "0+1200x60"),
            ],
            "promql_expr_test": [
                firing(
                    "CxltierdMigrationFailuresRising",
                    "40m",
                    {"instance": "h1:9750", "reason": "target_full", "severity": "warning"},
                )
            ],
        },
        {  # region1 disappears at 20m while region0 stays
            "input_series": [
                up,
                build,
                series("cxltierd_cxl_region_info", region0, "1x90"),
                series("cxltierd_cxl_region_info", region1, "1x20"),
            ],
            "alert_rule_test": [quiet("CxltierdCxlRegionLost", "15m")],
            "promql_expr_test": [
                firing("CxltierdCxlRegionLost", "40m", {"instance": "h1:9750", **region1, "severity": "critical"})
            ],
        },
        {  # every region gone at once is caught too
            "input_series": [up, build, series("cxltierd_cxl_region_info", region0, "1x20")],
            "promql_expr_test": [
                firing("CxltierdCxlRegionLost", "40m", {"instance": "h1:9750", **region0, "severity": "critical"})
            ],
        },
        {  # the daemon going down is CxltierdDown, not lost regions
            "input_series": [
                series("up", {}, "1x20 0x60"),
                series("cxltierd_build_info", {"version": "0.1.0"}, "1x20"),
                series("cxltierd_cxl_region_info", region0, "1x20"),
            ],
            "alert_rule_test": [quiet("CxltierdCxlRegionLost", "40m")],
            "promql_expr_test": [firing("CxltierdDown", "40m", {**host, "severity": "critical"})],
        },
        {  # RAS: node 4 degraded at 10m, failing at 20m, its drain stalled from 30m
            "input_series": [
                up,
                build,
                series("cxltierd_ras_node_state", {"node": "4", "state": "healthy"}, "1x10 0x50"),
                series("cxltierd_ras_node_state", {"node": "4", "state": "degraded"}, "0x10 1x10 0x40"),
                series("cxltierd_ras_node_state", {"node": "4", "state": "failing"}, "0x20 1x40"),
                series("cxltierd_ras_drain_stalled", {"node": "4"}, "0x30 1x30"),
            ],
            "alert_rule_test": [
                quiet("CxltierdCxlMemoryDegraded", "5m"),
                quiet("CxltierdCxlMemoryFailing", "15m"),
                quiet("CxltierdCxlDrainStalled", "25m"),
            ],
            "promql_expr_test": [
                firing("CxltierdCxlMemoryDegraded", "15m", {"instance": "h1:9750", "node": "4", "severity": "warning"}),
                firing("CxltierdCxlMemoryFailing", "25m", {"instance": "h1:9750", "node": "4", "severity": "critical"}),
                firing("CxltierdCxlDrainStalled", "40m", {"instance": "h1:9750", "node": "4", "severity": "critical"}),
            ],
        },
        {  # ticks stop at 10m while scrapes go on
            "input_series": [up, build, series("cxltierd_last_tick_timestamp_seconds", {}, "0+60x10 600x50")],
            "alert_rule_test": [quiet("CxltierdLoopStalled", "9m")],
            "promql_expr_test": [firing("CxltierdLoopStalled", "30m", {**host, "severity": "critical"})],
        },
        {  # answers scrapes but never ticked
            "input_series": [up, build],
            "promql_expr_test": [
                firing("CxltierdLoopStalled", "30m", {**host, "version": "0.1.0", "severity": "critical"})
            ],
        },
    ]
    for case in cases:
        case["interval"] = "1m"
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": cases}))
    proc = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_daemon_exports_every_metric_of_the_contract():
    """The metrics the service issue names, with Prometheus naming (counters end in _total, info gauges in _info)."""
    contract = {
        "build_info", "node_info", "node_memory_total_bytes", "node_memory_free_bytes", "tier_memory_total_bytes",
        "tier_memory_free_bytes", "cxl_memdev_info", "cxl_region_info", "cxl_region_size_bytes",
        "migrated_bytes_total", "migrated_pages_total", "migration_failures_total", "fast_tier_access_ratio",
        "hot_bytes", "loop_duration_seconds_bucket", "loop_duration_seconds_sum", "loop_duration_seconds_count",
        "last_tick_timestamp_seconds", "policy_reloads_total", "policy_last_reload_success",
        "topology_changes_total", "engine_info", "kernel_pgpromote_success_total", "kernel_pgdemote_kswapd_total",
        "kernel_pgdemote_direct_total", "kernel_pgmigrate_success_total", "kernel_pgmigrate_fail_total",
        "kernel_numa_pages_migrated_total",
    }  # fmt: skip
    assert {f"cxltierd_{m}" for m in contract} <= ALLOWED
