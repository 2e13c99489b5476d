"""The benchmarks are not run here (the lab ones need the QEMU guest, all of them take minutes), but they must not rot:
each script starts as a user would run it, and the lab benchmarks take their helpers from tests/lab/labkit.py (the
module the lab tests import) without loading a conftest."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
LAB = Path(__file__).resolve().parents[2] / "tests/lab"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_starts(script: str) -> None:
    done = subprocess.run([sys.executable, script, "--help"], cwd=BENCHMARKS, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("module", ["lab_migration", "lab_promotion", "lab_drain", "lab_reaction"])
def test_lab_benchmarks_share_the_lab_helpers_without_a_conftest(module: str) -> None:
    code = (
        f"import sys, {module} as bench; "
        "print(bench.start_workload.__module__, bench.start_workload.__code__.co_filename); "
        "print(sorted(m for m in sys.modules if 'conftest' in m))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    helpers, loaded = done.stdout.splitlines()
    assert helpers.split() == ["labkit", str(LAB / "labkit.py")]
    assert loaded == "[]"


def load(script: str) -> ModuleType:
    """A benchmark script as a module (its main() not run)."""
    spec = importlib.util.spec_from_file_location(f"bench_{script}", BENCHMARKS / f"{script}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


placement = load("placement")
GiB = 1 << 30
# share per placer (cxltierd, static, promote-on-access, age, oracle), cxltierd's and the oracle's GiB, ping-pong
GOOD = {
    "a": ((0.924, 0.613, 0.672, 0.613, 0.937), 6.8, 5.7, 0),
    "b": ((0.805, 0.510, 0.564, 0.510, 0.848), 22.2, 13.6, 451),
}


def results(
    table: dict[str, tuple[tuple[float, ...], float, float, int]],
) -> list[tuple[str, str, float, int, int, float, float, list]]:
    """What placement.one() returns for each (scenario, placer) job, from a per-scenario table (mean latency: 100 ns
    for every placer, as on a host without contention)."""
    out = []
    for s, (shares, moved, oracle_moved, pp) in table.items():
        for p, share in zip(placement.PLACERS, shares, strict=True):
            gib = moved if p == "cxltierd" else oracle_moved if p == "oracle" else 0.0
            out.append((s, p, share, int(gib * GiB), pp if p == "cxltierd" else 0, 100.0, 1.0, []))
        for p in placement.LATENCY_PLACERS:
            out.append((s, p, 0.0, 0, 0, 100.0, 1.0, []))
    return out


def run_main(monkeypatch: pytest.MonkeyPatch, table: dict, argv: list[str]) -> int:
    """placement.main(argv) on these results instead of simulating (no pool, no scenarios run)."""
    rows = {(r[0], r[1]): r for r in results(table)}

    class InProcess:
        def __init__(self, jobs: int) -> None:
            pass

        def __enter__(self) -> InProcess:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def map(self, fn, jobs):  # type: ignore[no-untyped-def]
            return [rows[(s, p)] for s, p, *_ in jobs]

    monkeypatch.setattr(placement, "Pool", InProcess)
    monkeypatch.setattr(placement, "scenario_names", lambda: list(table))
    monkeypatch.setattr(placement, "reactions", lambda *a: [])  # made-up scenarios have no heat changes to read
    code: int = placement.main(argv)
    return code


def test_placement_markdown_is_the_readme_table_format(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert run_main(monkeypatch, GOOD, ["--markdown"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "| scenario | cxltierd | static | promote-on-access | age | oracle | cxltierd / oracle | vs best baseline"
        " | GiB moved, cxltierd / oracle | ping-pong |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| a | 92.4% | 61.3% | 67.2% | 61.3% | 93.7% | 0.986 | +25.2p | 6.8 / 5.7 (1.2x) | 0 |",
        "| b | 80.5% | 51.0% | 56.4% | 51.0% | 84.8% | 0.949 | +24.1p | 22.2 / 13.6 (1.6x) | 451 |",
        "",
        "average share vs oracle: 0.968 (target >= 0.95); worst gap to the best baseline: +24.1 points (target >= -1);"
        " largest migration volume vs oracle: 1.6x (target <= 2x); targets met.",
        "",
        "| scenario | changes in heat | median reaction | worst reaction |",
        "|---|---|---|---|",
        "",
        "| scenario | cxltierd pack | cxltierd latency | static | promote-on-access | age | oracle (pack)"
        " | oracle-latency | latency / pack | latency / oracle-latency | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| a | 100 ns | 100 ns | 100 ns | 100 ns | 100 ns | 100 ns | 100 ns | 1.000 | 1.000 | <= 1.01 x pack: met |",
        "| b | 100 ns | 100 ns | 100 ns | 100 ns | 100 ns | 100 ns | 100 ns | 1.000 | 1.000 | <= 1.01 x pack: met |",
    ]
    assert err == ""


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"a": ((0.80, 0.613, 0.672, 0.613, 0.937), 6.8, 5.7, 0)}, "average share vs oracle 0.902 < 0.95"),
        ({"a": ((0.924, 0.613, 0.935, 0.613, 0.937), 6.8, 5.7, 0)}, "worst gap to the best baseline -1.1 points < -1"),
        ({"b": ((0.805, 0.510, 0.564, 0.510, 0.848), 27.3, 13.6, 0)}, "largest migration volume vs oracle 2.0x > 2x"),
        ({"b": ((0.805, 0.510, 0.564, 0.510, 0.848), 1.0, 0.0, 0)}, "largest migration volume vs oracle infx > 2x"),
    ],
)
def test_placement_exits_1_naming_each_missed_target(monkeypatch: pytest.MonkeyPatch, capsys, change, missed) -> None:
    assert run_main(monkeypatch, {**GOOD, **change}, []) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"placement.py: target missed: {missed}"]
    assert "targets MISSED" in out.splitlines()
    assert run_main(monkeypatch, {**GOOD, **change}, ["--markdown"]) == 1
    out, _ = capsys.readouterr()
    assert out.splitlines()[5].endswith(f"targets MISSED: {missed}.")


def test_discovery_markdown_is_the_readme_table_format() -> None:
    discovery = load("discovery")
    rows = [
        discovery.Row(4, 2, 3, 1024, discover=5.7e-3, classify=0.1e-3, peer=3.8e-3),
        discovery.Row(64, 32, 8, 16384, discover=73.75e-3, classify=1.56e-3, peer=57.0e-3),
    ]
    assert discovery.markdown(rows).splitlines() == [
        "| memdevs | regions | nodes | blocks | discover | classify | total | peer (raw read) | ratio | us per block |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| 4 | 2 | 3 | 1024 | 5.7ms | 0.10ms | 5.8ms | 3.8ms | 1.53 | 5.66 |",
        "| 64 | 32 | 8 | 16384 | 73.8ms | 1.56ms | 75.3ms | 57.0ms | 1.32 | 4.60 |",
        "",
        "largest host: 75.3 ms (target < 100 ms); time grew 13.0x for 16x the blocks (growth/linear = 0.81; <= 1 is"
        " linear or better).",
    ]


def test_overhead_benchmark_measures_the_pipeline_and_judges_the_budget() -> None:
    """A tiny run: every row has a positive CPU time, an RSS, and a verdict that follows the budget."""
    args = ["--sizes", "64MiB,256MiB", "--procs", "1,4", "--max-chunks", "0,64", "--ticks", "2", "--markdown"]
    done = subprocess.run(
        [sys.executable, "overhead.py", *args],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines()[2:]]
    assert [tuple(c.strip() for c in r[:5]) for r in rows] == [
        ("64MiB", "1", "0", "2MiB", "32"),
        ("64MiB", "1", "64", "2MiB", "32"),
        ("64MiB", "4", "0", "2MiB", "32"),
        ("64MiB", "4", "64", "2MiB", "32"),
        ("256MiB", "1", "0", "2MiB", "128"),
        ("256MiB", "1", "64", "4MiB", "64"),  # 128 chunks of 2 MiB is over the bound: they double
        ("256MiB", "4", "0", "2MiB", "128"),
        ("256MiB", "4", "64", "4MiB", "64"),
    ]
    overhead = load("overhead")
    for r in rows:
        cpu_ms, share, rss = float(r[5].split()[0]), float(r[6].strip().rstrip("%")), int(r[7].split()[0])
        assert cpu_ms >= 0 and rss > 0
        met = share / 100 < overhead.CPU_BUDGET and rss << 20 < overhead.RSS_BUDGET
        assert r[8].strip() == ("yes" if met else "no")


def test_placement_reaction_table_and_its_target() -> None:
    """Reactions come from cxltierd's and the oracle's series of the same runs; the median feeds the target."""
    oracle = [(float(t), 0.9) for t in range(1, 301)]
    slow = [(t, 0.5 if 90 < t <= 95 or 180 < t <= 185 or 270 < t <= 275 else 0.89) for t, _ in oracle]
    series = {("hotset-shift", "cxltierd"): slow, ("hotset-shift", "oracle"): oracle}
    (r,) = placement.reactions(series, ["hotset-shift"], 300.0, None)
    assert r.times == (6.0, 6.0, 6.0) and r.median == 6.0 and r.worst == 6.0
    table = placement.reaction_table([r])
    assert table.splitlines()[2] == "| hotset-shift | 3 | 6.0 intervals | 6 intervals |"
    assert r.median > placement.TARGET_REACTION


def test_lab_promotion_compares_the_best_cxltierd_row_with_the_mtier_peer() -> None:
    bench = load("lab_promotion")
    row = bench.Row
    rows = [
        row("cxltierd move_pages", 12.0, 4.0, 1.0, 0.0),
        row("cxltierd damos", 16.0, 15.0, 1.0, 0.0),
        row("kernel DAMON mtier", 30.0, None, 0.95, 0.02),
    ]
    line = bench.against_mtier(rows)
    assert line.startswith("cxltierd move_pages / kernel DAMON mtier: 0.40x the time to 90% (12.0 s vs 30.0 s)")
    assert line.endswith("(target met)")
    rows[0] = row("cxltierd move_pages", 40.0, 4.0, 1.0, 0.0)
    rows[1] = row("cxltierd damos", 35.0, 15.0, 1.0, 0.0)
    assert bench.against_mtier(rows).endswith("target MISSED")
    absent = row("kernel DAMON mtier", None, None, 0.0, 0.0, note="the kernel has no node_mem_used_bp quota goal")
    assert bench.against_mtier([rows[0], absent]) == ""
    assert absent.cells(120)[1] == "not run: the kernel has no node_mem_used_bp quota goal"


def test_lab_promotion_runs_give_median_range_and_a_verdict_per_run() -> None:
    bench = load("lab_promotion")
    row = bench.Row
    ours = [row("cxltierd damos", 20.0, 15.0, 1.0, 0.0), row("cxltierd damos", 26.0, 18.0, 1.0, 0.01)]
    ours.append(row("cxltierd damos", None, 16.0, 0.8, 0.0))
    peer = [row("kernel DAMON mtier", None, None, h, 0.0) for h in (0.6, 0.7)]
    peer.append(row("kernel DAMON mtier", 30.0, None, 0.95, 0.0))
    assert bench.summary(ours, 120) == [
        "cxltierd damos",
        "23.0 (20.0-26.0), reached in 2 of 3",
        "16.0 (15.0-18.0)",
        "6.5 (5.0-8.0)",
        "100% (80%-100%)",
        "0.0% (0.0%-1.0%)",
    ]
    assert bench.summary(peer[:2], 120)[1] == "not reached in 2 runs (65% (60%-70%) after 120 s)"
    first = bench.against_mtier([ours[0], peer[0]], 120)
    assert "did not within the cap (60% of the hot set on DDR): ratio < 0.17" in first
    assert bench.against_mtier([ours[2], peer[2]], 120).endswith("reached it in 30.0 s: target MISSED")


def test_lab_promotion_judges_each_engine_against_the_floor_in_every_run() -> None:
    bench = load("lab_promotion")
    row = bench.Row
    runs = [
        [row("floor", 2.0, None, 1.0, 0.0), row("cxltierd damos", 20.0, 15.0, 1.0, 0.0)],
        [row("floor", 4.0, None, 1.0, 0.0), row("cxltierd damos", 22.0, 14.0, 1.0, 0.005)],
        [row("floor", 3.0, None, 1.0, 0.0), row("cxltierd damos", 21.0, 16.0, 1.0, 0.0)],
    ]
    lines = bench.against_floor(runs)
    assert lines[0] == "floor (one move_pages call, the hot 16 MiB): median 3.0 s of 3 runs"
    assert lines[1].startswith("cxltierd damos: after the first tick, minus the floor: 2.0, 5.0, 2.0 s;")
    assert lines[1].endswith("MISSED (at most 3 s over the floor in every run, at most 1% cold)")  # 5.0 > 3
    runs[1][1] = row("cxltierd damos", 19.0, 14.0, 1.0, 0.005)
    assert "met (" in bench.against_floor(runs)[1]
    runs[2][1] = row("cxltierd damos", 19.0, 14.0, 1.0, 0.02)  # 2% of the cold part moved
    assert "MISSED" in bench.against_floor(runs)[1]
    runs[2][1] = row("cxltierd damos", None, 14.0, 0.5, 0.0)
    assert "1 not reached" in bench.against_floor(runs)[1] and "MISSED" in bench.against_floor(runs)[1]
    assert bench.against_floor([[r for r in rs if r.name != "floor"] for rs in runs]) == []


def test_lab_overhead_row_gives_ratios_and_per_process_cost(tmp_path: Path) -> None:
    bench = load("lab_overhead")
    cells = bench.Row(8, 8, 6, 30.0, 1.5, 6.0, 50 << 20, 0).cells()
    assert cells == ["8", "8", "6 (30 s)", "5.0 s", "250 ms", "5.0%", "20.0%", "4.0", "31.2 ms", "2.50%", "50 MiB", "0"]
    stalled = bench.Row(64, 64, 0, 45.0, 1.5, 86.0, 50 << 20, 0).cells()
    assert stalled[3:5] == ["none finished", "n/a"] and stalled[8] == "n/a"
    log = tmp_path / "daemon.log"
    log.write_text("start\ntick 1: nothing\ntick 2: no")
    ticks = bench.TickReader(log)
    assert ticks() == 1  # a line not yet ended is not counted
    with log.open("a") as f:
        f.write("thing moved\ntick 3: x\n")
    assert ticks() == 3


def test_tenants_benchmark_guarantee_holds_and_the_table_has_every_placer() -> None:
    """A short run of the latency-next-to-batch scenario (issue 12): with budgets the latency tenant's hot set is
    served from the fast tier and never below its guarantee once settled; without, the batch job keeps DDR."""
    tenants = load("tenants")
    with_budgets = tenants.run_one(("tenants-latency-batch", "budgets", 1, 120.0))
    without = tenants.run_one(("tenants-latency-batch", "no budgets", 1, 120.0))
    assert with_budgets.below == 0 and without.below > 0
    assert with_budgets.lat > 0.9 > without.lat
    assert abs(with_budgets.total - without.total) < 0.03
    poa = tenants.Result("tenants-latency-batch", "promote-on-access", 1, 0.0, 0.5, 60.0, 0.0, 0.6, 1.0)
    table = tenants.table([with_budgets, without, poa])
    rows = [line for line in table.splitlines() if line.startswith("| tenants-latency-batch")]
    assert [r.split(" | ")[1] for r in rows] == ["budgets", "no budgets", "promote-on-access"]
    assert tenants.missed([with_budgets, without, poa]) == []
    late = tenants.Result("tenants-latency-batch", "budgets", 1, 0.9, 1.0, 5.0, 0.0, 0.6, 1.0)
    assert tenants.missed([late, without]) == [
        "tenants-latency-batch seed 1: 5 s below a guarantee (target 0)",
        f"tenants-latency-batch seed 1: budgets cost {100 * (without.total - 0.6):.2f} points of fast share (target 3)",
    ]


def test_lab_reaction_subtracts_the_floor_and_judges_every_run() -> None:
    bench = load("lab_reaction")
    row = bench.Row
    floor = row("floor", [2.0, 2.4, 2.5, 2.6, 3.0])
    fast = row("cxltierd move_pages", [4.0, 4.5, 5.0, 5.2, 5.5], [3, 3, 4, 4, 5], 0.0)
    slow = row("cxltierd damos", [4.0, 4.5, 5.0, 5.2, 6.0], [3, 3, 4, 4, 6], 0.0)
    never = row("cxltierd numa_balancing", [7.0, None, 7.5, 8.0, 8.1], [7, 60, 7, 8, 8], 0.01)
    text = bench.table([floor, fast, slow, never], 4, 5, 60.0)
    lines = text.splitlines()
    assert lines[4] == "| floor | 2.0, 2.4, 2.5, 2.6, 3.0 | 2.5 (2.0-3.0) |  |  |  |"
    assert lines[5] == "| cxltierd move_pages | 4.0, 4.5, 5.0, 5.2, 5.5 | 5.0 (4.0-5.5) | 2.5 / 3.0 | 4 / 5 | 0.0% |"
    assert lines[7].startswith("| cxltierd numa_balancing | 7.0, -, 7.5, 8.0, 8.1 | 7.8 (7.0-8.1), 1 not reached |")
    verdict = lines[-1]
    assert "cxltierd move_pages: met" in verdict  # 5.5 - 2.5 = 3.0: within the bound in every run
    assert "cxltierd damos: MISSED" in verdict  # one run 3.5 s over the floor
    assert "cxltierd numa_balancing: MISSED" in verdict  # one run never reached 90%


def test_placement_latency_targets() -> None:
    scenarios = ["bandwidth-scan", "three-tier", "zipf-static"]
    lat = {(s, p): 100.0 for s in scenarios for p in (*placement.PLACERS, *placement.LATENCY_PLACERS)}
    lat[("bandwidth-scan", "cxltierd")] = 120.0  # latency only 17% below pack: met
    lat[("three-tier", "oracle-latency")] = 90.0  # 11% above the oracle: missed
    lat[("zipf-static", "cxltierd-latency")] = 102.0  # 2% above pack without contention: missed
    table, misses = placement.latency_rows(lat, scenarios)
    assert [m.split(":")[0] for m in misses] == ["three-tier", "zipf-static"]
    assert "| bandwidth-scan | 120 ns | 100 ns |" in table and "0.833 | 1.000 | <= 0.85 x pack" in table
