"""RAS in `cxltierd simulate`: the shipped cxl-expander-failure scenario degrades then fails the CXL node mid-run;
the failing node is drained, nothing is placed into it once it is degraded, and the simulate output says so."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from cxltierd.cli import main
from cxltierd.emulate import read_scenario
from cxltierd.emulate.simulate import run

MiB = 1 << 20
NAME = "cxl-expander-failure"


def test_shipped_scenario_drains_the_failing_node_and_places_nothing_into_it(tmp_path: Path) -> None:
    sc = read_scenario(NAME)
    assert [(s.at, s.event) for s in sc.ras_events] == [(40, "memory_module"), (80, "general_media")]
    r = run(NAME, duration=120)
    assert r.ras is not None
    first, second = r.ras.transitions
    assert first.startswith("41s mem0: healthy -> degraded") and "MAINTENANCE_NEEDED" in first
    assert second.startswith("81s mem0: degraded -> failing") and "uncorrectable cxl_general_media" in second
    status, moved, left = r.ras.drains[2]
    assert status == "done" and left == 0 and moved > 512 * MiB
    assert r.ras.nodes == {2: "failing"} and r.ras.into_avoided == 0
    assert r.demoted_bytes > 0  # demotions into the CXL node did happen while it was healthy
    # the same run without the errors keeps demoting into the CXL node after 40 s: the avoidance is what stopped it
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "cxltierd/data/scenarios" / f"{NAME}.yaml").read_text())
    del doc["ras_events"]
    plain = tmp_path / "no-errors.yaml"
    plain.write_text(yaml.safe_dump(doc))
    healthy = run(str(plain), duration=120)
    assert healthy.ras is None and healthy.demoted_bytes > r.demoted_bytes
    assert r.share_between(100, 120) == 1.0  # after the drain everything is served from DDR


def test_simulate_prints_the_ras_lines() -> None:
    result = CliRunner().invoke(main, ["simulate", "--scenario", NAME, "--duration", "100", "--no-baselines"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert (
        "RAS (cxltierd):" in out and "41s mem0: healthy -> degraded" in out and "81s mem0: degraded -> failing" in out
    )
    assert "drain of node 2: done" in out and "0 B left" in out
    assert "nodes kept off placement: 2 failing; placed into them: 0 B" in out
    result = CliRunner().invoke(main, ["simulate", "--scenario", NAME, "--duration", "100", "--no-baselines", "--json"])
    (doc,) = json.loads(result.stdout)
    assert doc["ras"]["nodes"] == {"2": "failing"} and doc["ras"]["drains"]["2"]["status"] == "done"
    assert doc["ras"]["placed_into_avoided_bytes"] == 0


def test_baselines_and_scenarios_without_errors_have_no_ras_section() -> None:
    result = CliRunner().invoke(main, ["simulate", "--scenario", "zipf-static", "--duration", "10", "--no-baselines"])
    assert result.exit_code == 0 and "RAS" not in result.stdout
    assert run(NAME, "static", duration=5).ras is None
