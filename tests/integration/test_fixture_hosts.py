"""`cxltierd topology --json` on every fixture host, diffed against fixtures/expected/NAME.json, plus the rules.

Regenerate the expected files after an intended change with: CXLTIERD_UPDATE_EXPECTED=1 pytest tests/integration
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxltierd.cli import main

REPO = Path(__file__).resolve().parents[2]
HOSTS = REPO / "fixtures" / "hosts"
EXPECTED = REPO / "fixtures" / "expected"
NAMES = sorted(p.name for p in HOSTS.iterdir() if (p / "sys").is_dir())


def topology(root: Path | str) -> dict:
    result = CliRunner().invoke(main, ["topology", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_named_host_is_there():
    assert set(NAMES) >= {
        "single-node",
        "two-socket-cxl",
        "interleaved-cxl",
        "xeon-max-flat",
        "grace-hopper",
        "qemu-cxl-node4",
        "xeon-max-cxl",
        "two-cxl-switch",
        "page-cache",
    }


@pytest.mark.parametrize("name", NAMES)
def test_topology_json_matches_expected(name):
    doc = topology(HOSTS / name)
    path = EXPECTED / f"{name}.json"
    if os.environ.get("CXLTIERD_UPDATE_EXPECTED"):
        path.write_text(json.dumps(doc, indent=2) + "\n")
    assert doc == json.loads(path.read_text())
    assert set(doc) == {"nodes", "tiers", "cxl", "dax", "kernel"}
    assert set(doc["cxl"]) == {"memdevs", "regions", "decoders"}


def kinds(doc: dict) -> dict[int, str]:
    return {n["node"]: n["tier"] for n in doc["nodes"]}


def test_real_kernel_tree_ground_truth():
    """fixtures/hosts/qemu-cxl-node4/GROUND-TRUTH.md, checked field by field."""
    doc = topology(HOSTS / "qemu-cxl-node4")
    assert kinds(doc) == {0: "ddr", 1: "ddr", 2: "unknown", 4: "cxl"}  # node 3 (generic port) is no memory node
    assert [t["tier"] for t in doc["tiers"]] == ["ddr", "unknown", "cxl"]
    node4 = next(n for n in doc["nodes"] if n["node"] == 4)
    assert node4["total_bytes"] == 524288 * 1024 and node4["region"] == "region0" and node4["kernel_tier"] == 9924
    assert node4["distances"] == {"0": 20, "1": 20, "2": 20, "4": 10}
    (mem,) = doc["cxl"]["memdevs"]
    assert mem["memdev"] == "mem0" and mem["ram_size"] == 0x20000000 and mem["pmem_size"] == 0 and mem["serial"] == 0
    assert mem["numa_node"] == -1 and mem["host"] == "0000:0d:00.0"
    (region,) = doc["cxl"]["regions"]
    assert region["region"] == "region0" and region["type"] == "ram" and region["size"] == 0x20000000
    assert region["resource"] == 0x370000000 and region["interleave_ways"] == 1
    assert region["interleave_granularity"] == 256 and region["decode_state"] == "commit" and region["enabled"]
    assert region["mappings"] == [{"position": 0, "memdev": "mem0", "decoder": "decoder2.0"}]
    assert region["target_node"] == 4 and region["access0"]["read_latency"] == 17180
    (dax,) = doc["dax"]
    assert dax["chardev"] == "dax0.0" and dax["mode"] == "system-ram" and dax["target_node"] == 4
    assert dax["size"] == 536870912 and dax["movable"] is True
    assert (dax["online_memblocks"], dax["total_memblocks"]) == (4, 4)
    k = doc["kernel"]
    assert k["release"] == "6.12.95+deb12-amd64" and k["block_size_bytes"] == 0x8000000
    assert k["memory_tiers"] == {"memory_tier4": [0, 1], "memory_tier144": [2], "memory_tier9924": [4]}
    assert k["memory_tiers_consistent"] is True
    assert k["numa_balancing"] == 1 and k["demotion_enabled"] is False and k["auto_online_blocks"] == "online_movable"


def test_classification_rules_on_synthetic_hosts():
    assert kinds(topology(HOSTS / "single-node")) == {0: "ddr"}
    two = topology(HOSTS / "two-socket-cxl")
    assert [t["tier"] for t in two["tiers"]] == ["ddr", "cxl"]
    inter = topology(HOSTS / "interleaved-cxl")
    onlined = [g for g in inter["cxl"]["regions"] if g["target_node"] is not None and g["daxregion"]]
    assert any(len(g["mappings"]) == 2 and g["interleave_ways"] == 2 for g in inter["cxl"]["regions"])
    assert {d["mode"] for d in inter["dax"]} == {"system-ram", "devdax"}
    assert onlined
    xeon = topology(HOSTS / "xeon-max-flat")
    assert xeon["tiers"][0]["tier"] == "hbm" and "ddr" in [t["tier"] for t in xeon["tiers"]]
    assert all("HMAT bandwidth" in n["reason"] for n in xeon["nodes"] if n["tier"] == "hbm")
    gh = topology(HOSTS / "grace-hopper")
    assert "hbm" in kinds(gh).values()
    assert all("NVIDIA GPU" in n["reason"] for n in gh["nodes"] if n["tier"] == "hbm")


def test_three_tiers_hbm_ddr_cxl():
    """Xeon Max (flat) with a CXL expander: CPU-less HBM nodes are the fastest tier, then DDR, then CXL."""
    doc = topology(HOSTS / "xeon-max-cxl")
    assert kinds(doc) == {0: "ddr", 1: "ddr", 2: "hbm", 3: "hbm", 4: "cxl"}
    assert [(t["tier"], t["rank"], t["nodes"]) for t in doc["tiers"]] == [
        ("hbm", 0, [2, 3]),
        ("ddr", 1, [0, 1]),
        ("cxl", 2, [4]),
    ]
    node4 = next(n for n in doc["nodes"] if n["node"] == 4)
    assert node4["region"] == "region0" and node4["reason"] == "target of CXL region0 via dax0.0"
    # HBM and DDR share the kernel's memory_tier4: said once, and nothing else is wrong
    assert doc["kernel"]["memory_tier_warnings"] == [
        "kernel memory_tier4 holds hbm node(s) 2,3 and ddr node(s) 0,1: the kernel will not demote between them"
    ]


def test_two_cxl_tiers_direct_and_behind_a_switch():
    """Two CXL regions onlined as two nodes: the switched one has its own port and decoder, and each node carries
    its own region's figures (access0), so the far one (380 against 250 ns) is a tier of its own, cxl-far, below."""
    doc = topology(HOSTS / "two-cxl-switch")
    assert kinds(doc) == {0: "ddr", 1: "ddr", 2: "cxl", 3: "cxl-far"}
    assert [(t["tier"], t["nodes"]) for t in doc["tiers"]] == [("ddr", [0, 1]), ("cxl", [2]), ("cxl-far", [3])]
    assert "1.52x the nearer CXL tier's 250 ns" in {n["node"]: n for n in doc["nodes"]}[3]["reason"]
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert (nodes[2]["region"], nodes[3]["region"]) == ("region0", "region1")
    assert (nodes[2]["hmat"]["read_latency_ns"], nodes[3]["hmat"]["read_latency_ns"]) == (250, 380)
    regions = {g["region"]: g for g in doc["cxl"]["regions"]}
    assert regions["region0"]["access0"]["read_latency"] == 250 and regions["region1"]["access0"]["read_latency"] == 380
    assert [m["memdev"] for m in regions["region1"]["mappings"]] == ["mem1"]
    switch = [d["decoder"] for d in doc["cxl"]["decoders"] if d["kind"] == "switch" and d["region"] == "region1"]
    assert switch == ["decoder3.0", "decoder101.0"]  # host bridge, then the switch
    assert [d["decoder"] for d in doc["cxl"]["decoders"] if d["kind"] == "switch" and d["region"] == "region0"] == [
        "decoder1.0"
    ]
    assert doc["kernel"]["memory_tiers"] == {"memory_tier4": [0, 1], "memory_tier22": [2], "memory_tier30": [3]}
    assert doc["kernel"]["memory_tiers_consistent"] is True


def test_disagreement_with_kernel_memory_tiers_is_flagged(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(HOSTS / "qemu-cxl-node4", root, symlinks=True)
    tiers = root / "sys/devices/virtual/memory_tiering"
    # the kernel puts the CXL node above the unknown far node
    (tiers / "memory_tier144/nodelist").write_text("4\n")
    (tiers / "memory_tier9924/nodelist").write_text("2\n")
    doc = topology(root)
    assert doc["kernel"]["memory_tiers_consistent"] is False
    assert any("the other way round" in w for w in doc["kernel"]["memory_tier_warnings"])
    result = CliRunner().invoke(main, ["doctor", "--root", str(root)])
    assert result.exit_code == 1 and "[warn] memory-tiers: kernel memory_tier" in result.output


def test_status_and_doctor_on_fixtures():
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--root", str(HOSTS / "two-socket-cxl")])
    assert result.exit_code == 0 and "cxl" in result.output and "ddr" in result.output
    result = runner.invoke(main, ["doctor", "--root", str(HOSTS / "qemu-cxl-node4"), "--json"])
    checks = {c["name"]: c["status"] for c in json.loads(result.stdout)}
    assert checks["region region0"] == "ok" and checks["dax dax0.0"] == "ok" and checks["kernel"] == "ok"
    assert checks["numa_balancing"] == "warn" and result.exit_code == 1
    result = runner.invoke(main, ["doctor", "--root", str(HOSTS / "interleaved-cxl")])
    assert "devdax" in result.output and "daxctl reconfigure-device" in result.output


@pytest.mark.parametrize("command", ["topology", "status", "doctor"])
def test_bad_root_is_one_line_exit_2(tmp_path, command):
    for root in (tmp_path / "missing", tmp_path):
        proc = subprocess.run(
            [sys.executable, "-m", "cxltierd", command, "--root", str(root)], capture_output=True, text=True
        )
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cxltierd: error: ")
        assert "Traceback" not in proc.stderr
