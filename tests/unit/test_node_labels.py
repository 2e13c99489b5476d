"""Node labels for Kubernetes: the node-feature-discovery feature file the daemon writes when the policy asks."""

from __future__ import annotations

import logging
import re

import pytest

from cxltierd.app import Settings, build
from cxltierd.errors import ConfigError
from cxltierd.facts import HostFacts, Memdev
from cxltierd.policy.schema import parse_policy
from cxltierd.service.daemon import Daemon, FakeClock, Options
from cxltierd.service.nfd import LABEL_PREFIX, feature_file, labels
from cxltierd.service.state import Snapshot
from cxltierd.topology import Node, Tier, Topology

GiB = 1 << 30
TOPO = Topology(
    nodes=(Node(0, "ddr", "t", total_bytes=64 * GiB), Node(2, "cxl", "t", total_bytes=256 * GiB + 5)),
    tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (2,))),
)
# Kubernetes label syntax: an optional DNS prefix, a name of at most 63 characters, a value of at most 63.
LINE = re.compile(r"([a-z0-9.-]+/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9]?)=([A-Za-z0-9][-A-Za-z0-9_.]{0,62})?")


def test_labels_name_tiers_capacity_and_cxl():
    snap = Snapshot(topology=TOPO, facts=HostFacts(root="/", memdevs=(Memdev("mem0", "/m"), Memdev("mem1", "/m"))))
    assert labels(snap) == {
        "tiers": "ddr.cxl",
        "tier-ddr": "true",
        "tier-ddr-capacity-gib": "64",
        "tier-cxl": "true",
        "tier-cxl-capacity-gib": "256",
        "cxl": "true",
        "cxl-memdevs": "2",
    }
    one = Topology(nodes=(Node(0, "ddr", "t", total_bytes=GiB),), tiers=(Tier("ddr", 0, (0,)),))
    assert labels(Snapshot(topology=one))["cxl"] == "false"
    lines = feature_file(snap).splitlines()
    assert lines[0].startswith("# ")
    for line in lines[1:]:
        assert LINE.fullmatch(line) and line.startswith(LABEL_PREFIX), line


def test_the_policy_enables_the_feature_file_with_an_absolute_path():
    assert parse_policy("").node_labels.feature_file is None
    assert parse_policy("node_labels: {feature_file: null}").node_labels.feature_file is None
    p = parse_policy("node_labels: {feature_file: /etc/kubernetes/node-feature-discovery/features.d/cxltierd}")
    assert p.node_labels.feature_file == "/etc/kubernetes/node-feature-discovery/features.d/cxltierd"
    with pytest.raises(ConfigError, match=r"p.yaml: node_labels.feature_file: must be an absolute file path"):
        parse_policy("node_labels: {feature_file: features.d/x}", "p.yaml")
    with pytest.raises(ConfigError, match=r"p.yaml: node_labels.file: unknown key .file. \(valid keys: feature_file\)"):
        parse_policy("node_labels: {file: /x}", "p.yaml")


def run(tmp_path, feature: str) -> Daemon:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"node_labels: {{feature_file: {feature}}}\n")
    policy.chmod(0o644)
    rt, loop = build(Settings(backend="emulated", seed=1, config=str(policy), state_dir=str(tmp_path / "state")))
    d = Daemon(rt, loop, Options(ticks=3), clock=FakeClock())
    assert d.run() == 0
    return d


def test_the_daemon_writes_the_feature_file(tmp_path):
    features = tmp_path / "features.d"
    features.mkdir()
    run(tmp_path, str(features / "cxltierd"))
    text = (features / "cxltierd").read_text()
    assert f"{LABEL_PREFIX}tiers=ddr.cxl\n" in text and f"{LABEL_PREFIX}cxl=true\n" in text
    assert re.search(rf"^{re.escape(LABEL_PREFIX)}tier-cxl-capacity-gib=\d+$", text, re.M)
    assert sorted(p.name for p in features.iterdir()) == ["cxltierd"]  # no temporary file left behind


def test_a_feature_file_that_cannot_be_written_is_one_logged_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, "cxltierd")
    run(tmp_path, str(tmp_path / "missing" / "cxltierd"))
    errors = [r.getMessage() for r in caplog.records if "node_labels.feature_file" in r.getMessage()]
    assert errors == [f"node_labels.feature_file {tmp_path}/missing/cxltierd: cannot write (No such file or directory): "
                      "no node labels"]  # fmt: skip
