"""Weighted interleave: weights from HMAT bandwidth, the operator's and the kernel's auto mode respected, restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxltierd.engines.interleave import WI_DIR, WeightedInterleave, auto_mode, read_weights
from cxltierd.errors import ConfigError
from cxltierd.hostfs import HostFS
from cxltierd.policy.interleave import bandwidth_weights
from cxltierd.policy.schema import Interleave, parse_policy
from cxltierd.topology import Hmat, Node, Tier, Topology

BANDWIDTH = Interleave(weights="bandwidth")


def topo(bw: dict[int, int | None]) -> Topology:
    nodes = tuple(
        Node(n, "ddr" if i == 0 else "cxl", "test", hmat=Hmat(100, 100, b, b) if b else None)
        for i, (n, b) in enumerate(bw.items())
    )
    return Topology(nodes=nodes, tiers=(Tier("ddr", 0, (nodes[0].node,)), Tier("cxl", 1, tuple(bw)[1:])))


def tree(tmp_path: Path, weights: dict[int, int], auto: str | None = None) -> HostFS:
    d = tmp_path / WI_DIR.lstrip("/")
    d.mkdir(parents=True)
    for n, w in weights.items():
        (d / f"node{n}").write_text(f"{w}\n")
    if auto is not None:
        (d / "auto").write_text(auto + "\n")
    return HostFS(tmp_path)


def test_weights_follow_bandwidth_reduced():
    assert bandwidth_weights({0: 20480, 1: 20480, 2: 5120, 4: 16000}) == {0: 32, 1: 32, 2: 8, 4: 25}
    assert bandwidth_weights({0: 100, 1: 50}) == {0: 2, 1: 1}
    assert bandwidth_weights({0: 1000, 1: 1}) == {0: 32, 1: 1}  # every node at least 1
    assert bandwidth_weights({0: 0, 1: None}) == {}  # type: ignore[dict-item]


def test_sets_from_hmat_and_restores(tmp_path):
    fs = tree(tmp_path, {0: 1, 1: 1, 2: 1})
    state = tmp_path / "state" / "interleave.json"
    wi = WeightedInterleave(fs, state)
    note = wi.apply(topo({0: 20000, 1: 10000, 2: None}), BANDWIDTH)
    assert note is not None and "node0=2 node1=1" in note
    assert read_weights(fs) == {0: 2, 1: 1, 2: 1}  # node 2 has no HMAT figures: its weight is left alone
    assert json.loads(state.read_text())["weights"] == {"0": 1, "1": 1, "2": 1}
    # a restarted daemon (crash) finds the record and still restores the original weights
    WeightedInterleave(fs, state).restore()
    assert read_weights(fs) == {0: 1, 1: 1, 2: 1}
    assert not state.exists()


def test_operator_weights_kept_unless_override(tmp_path):
    fs = tree(tmp_path, {0: 5, 1: 1})
    wi = WeightedInterleave(fs, tmp_path / "s.json")
    note = wi.apply(topo({0: 30000, 1: 15000}), BANDWIDTH)
    assert note is not None and "operator" in note and "node0=5" in note
    assert read_weights(fs) == {0: 5, 1: 1}
    wi.apply(topo({0: 30000, 1: 15000}), Interleave("bandwidth", override=True))
    assert read_weights(fs) == {0: 2, 1: 1}
    wi.restore()
    assert read_weights(fs) == {0: 5, 1: 1}


def test_kernel_auto_mode_kept_and_given_back(tmp_path):
    fs = tree(tmp_path, {0: 3, 1: 2}, auto="Y")
    wi = WeightedInterleave(fs, tmp_path / "s.json")
    note = wi.apply(topo({0: 30000, 1: 15000}), BANDWIDTH)
    assert note is not None and "auto mode" in note and read_weights(fs) == {0: 3, 1: 2}
    wi.apply(topo({0: 30000, 1: 15000}), Interleave("bandwidth", override=True))
    assert read_weights(fs) == {0: 2, 1: 1}
    wi.restore()
    assert (fs.path(WI_DIR) / "auto").read_text() == "true"  # the kernel recomputes its own weights
    # manual mode on 6.16+ (auto false) means an operator wrote weights: kept
    fs2 = tree(tmp_path / "b", {0: 1, 1: 1}, auto="N")
    assert auto_mode(fs2) is False
    note = WeightedInterleave(fs2, tmp_path / "b.json").apply(topo({0: 30000, 1: 15000}), BANDWIDTH)
    assert note is not None and "operator" in note and read_weights(fs2) == {0: 1, 1: 1}


def test_keep_restores_a_previous_setting_and_dry_run_writes_nothing(tmp_path):
    fs = tree(tmp_path, {0: 1, 1: 1})
    state = tmp_path / "s.json"
    assert WeightedInterleave(fs, state).apply(topo({0: 30000, 1: 15000}), BANDWIDTH, dry_run=True) is not None
    assert read_weights(fs) == {0: 1, 1: 1} and not state.exists()
    WeightedInterleave(fs, state).apply(topo({0: 30000, 1: 15000}), BANDWIDTH)
    assert read_weights(fs) == {0: 2, 1: 1}
    assert WeightedInterleave(fs, state).apply(topo({0: 30000, 1: 15000}), Interleave()) is not None
    assert read_weights(fs) == {0: 1, 1: 1} and not state.exists()
    assert WeightedInterleave(fs, state).apply(topo({0: 30000, 1: 15000}), Interleave()) is None


def test_no_interface_is_a_note(tmp_path):
    (tmp_path / "sys").mkdir()
    note = WeightedInterleave(HostFS(tmp_path), tmp_path / "s.json").apply(topo({0: 2, 1: 1}), BANDWIDTH)
    assert note is not None and "6.9+" in note


def test_policy_key():
    assert parse_policy("interleave: {weights: bandwidth}").interleave == BANDWIDTH
    assert parse_policy("").interleave == Interleave()
    with pytest.raises(ConfigError, match=r"interleave\.weights"):
        parse_policy("interleave: {weights: fast}")
