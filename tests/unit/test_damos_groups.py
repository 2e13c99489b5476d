"""The DAMOS engine's cgroup coverage and tenant schemes: the pure plan (damos_groups) and the files written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxltierd.engines.damon import KDAMONDS, Kdamonds
from cxltierd.engines.damon_probe import DamonFeatures
from cxltierd.engines.damos import RESCAN_S, DamosEngine, uses
from cxltierd.engines.damos_groups import MAX_MEMCGS, Group, coverage, shares, tenant_for
from cxltierd.policy.schema import build_policy
from tests.unit.test_engines import TOPO3, FakeDamon, damos_host

MiB = 1 << 20
HOT = f"{KDAMONDS}/0/contexts/0/schemes"
COLD = f"{KDAMONDS}/1/contexts/0/schemes"
NEW = DamonFeatures(probed=True, goal_metrics=("user_input", "node_memcg_used_bp", "node_memcg_free_bp"))


def tenants(*rows: dict) -> tuple:
    return build_policy({"tenants": list(rows)}).tenants


def cgroups(fs: FakeDamon, *paths: str, memory: bool = True) -> None:
    for p in paths:
        d = fs.path(f"/sys/fs/cgroup{p}")
        d.mkdir(parents=True, exist_ok=True)
        if memory:
            (d / "memory.current").write_text("0\n")


def schemes_of(w: dict[str, str], base: str) -> list[dict[str, str]]:
    """Per scheme index: its written files, relative to the scheme directory."""
    out = []
    for i in range(int(w[f"{base}/nr_schemes"])):
        p = f"{base}/{i}/"
        out.append({k[len(p) :]: v for k, v in w.items() if k.startswith(p)})
    return out


def memcg(s: dict[str, str]) -> str | None:
    for i in range(int(s.get("filters/nr_filters", "0"))):
        if s[f"filters/{i}/type"] == "memcg" and s[f"filters/{i}/matching"] == "N":
            return s[f"filters/{i}/memcg_path"]
    return None


def test_tenant_for_takes_the_longest_cgroup_prefix():
    ts = tenants(
        {"name": "ai", "match": {"cgroup": "/ai"}},
        {"name": "inf", "match": {"cgroup": "/ai/inf/"}},
        {"name": "byname", "match": {"name": "x"}},
    )
    assert tenant_for(ts, "/ai/inf/w1") == "inf" and tenant_for(ts, "/ai/train") == "ai"
    assert tenant_for(ts, "/aix") == "other" and tenant_for(ts, "/") == "other"


def test_shares_follow_weights_and_split_within_a_tenant():
    ts = tenants({"name": "lat", "match": {"cgroup": "/a"}, "weight": 3})
    got = shares([Group("/a", "lat"), Group("/b"), Group("/c")], ts)
    assert [g.share for g in got] == pytest.approx([0.75, 0.125, 0.125])
    assert sum(g.share for g in shares([Group("/x"), Group("/y")], ())) == pytest.approx(1.0)


def test_coverage_is_bounded_and_says_what_it_left_out():
    found = [f"/m/{i}" for i in range(MAX_MEMCGS + 3)] + ["/m/0"]  # a duplicate counts once
    cov = coverage(found, False, (), (), 0, 0)
    assert [g.memcg for g in cov.groups] == found[:MAX_MEMCGS]
    assert cov.dropped == tuple(found[MAX_MEMCGS : MAX_MEMCGS + 3]) and cov.found == MAX_MEMCGS + 3
    note = cov.note()
    assert note is not None and f"only the first {MAX_MEMCGS}" in note and f"/m/{MAX_MEMCGS}" in note
    assert cov.status() == (f"memcg_schemes:{MAX_MEMCGS}/{MAX_MEMCGS + 3}",)
    assert coverage(found[:2], False, (), (), 0, 0).note() is None


def test_coverage_goals_only_where_the_kernel_has_them():
    ts = tenants(
        {"name": "lat", "match": {"cgroup": "/a"}, "fast_min": "100MiB", "fast_max": "200MiB"},
        {"name": "batch", "match": {"cgroup": "/b"}, "weight": 2},
    )
    total = 1000 * MiB
    new = coverage(["/a", "/a/x", "/b"], False, ts, NEW.goal_metrics, total, 2 * total)
    assert new.mechanism == "node_memcg_used_bp"
    (goal,) = new.goals  # batch has neither a guarantee nor a cap
    assert (goal.tenant, goal.path, goal.memcgs, goal.used_bp, goal.free_bp) == (
        "lat",
        "/a",
        ("/a", "/a/x"),
        1000,
        8000,
    )
    old = coverage(["/a", "/a/x", "/b"], False, ts, ("user_input",), total, 2 * total)
    assert old.mechanism == "weighted_quota" and old.goals == ()
    assert [g.share for g in old.groups] == pytest.approx([1 / 6, 1 / 6, 2 / 3])
    # no cgroup selector in processes.manage: all memory, the tenants' cgroups apart
    everything = coverage(["/a"], True, ts, (), total, total)
    assert everything.groups[0].memcg is None and everything.groups[0].exclude == ("/a",)


def test_damos_gives_every_descendant_cgroup_its_own_schemes(tmp_path: Path):
    fs = damos_host(tmp_path)
    cgroups(fs, "/ai", "/ai/x", "/ai/x/y", "/web")
    cgroups(fs, "/ai/nomem", memory=False)  # no memory controller: no memcg to match
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"))
    pol = build_policy(
        {"processes": {"manage": [{"cgroup": "/ai"}, {"cgroup": "/web"}]}, "rate_limit": {"mb_per_s": 80}}
    )
    e.configure(TOPO3, pol)
    hot = schemes_of(dict(fs.writes), HOT)
    migrate = [s for s in hot if s["action"] == "migrate_hot"]
    assert [memcg(s) for s in migrate] == ["/ai", "/ai", "/ai/x", "/ai/x", "/ai/x/y", "/ai/x/y", "/web", "/web"]
    assert {s["quotas/bytes"] for s in migrate} == {str(5 * MiB)}  # 40 MiB/s, two slow nodes, four cgroups
    assert hot[-1]["action"] == "lru_deprio" and memcg(hot[-1]) is None  # prime: every page (filters all apply)
    cold = schemes_of(dict(fs.writes), COLD)
    assert [memcg(s) for s in cold[1:]] == ["/ai", "/ai/x", "/ai/x/y", "/web"]
    assert e.live_uses() == ("memcg_schemes:4/4",)
    # what each scheme moved is charged to its own source node
    for i, applied in ((1, 4 * MiB), (4, 8 * MiB)):
        fs.path(f"{HOT}/{i}/stats").mkdir(parents=True, exist_ok=True)
        fs.path(f"{HOT}/{i}/stats/sz_applied").write_text(str(applied))
    out = e.apply(None, 1.0)  # type: ignore[arg-type]
    assert {(t.src, t.dst): t.bytes for t in out.transfers} == {(2, 0): 4 * MiB, (4, 0): 8 * MiB}

    # a cgroup appears: found at the next enumeration, committed, nothing counted twice
    e.sample(10.0)
    cgroups(fs, "/ai/new")
    fs.writes.clear()
    e.sample(10.0 + RESCAN_S / 2)
    assert (f"{KDAMONDS}/0/state", "commit") not in fs.writes  # not yet
    e.sample(10.0 + RESCAN_S)
    w = dict(fs.writes)
    assert (f"{KDAMONDS}/0/state", "commit") in fs.writes and w[f"{HOT}/nr_schemes"] == str(1 + 2 * 5 + 1)
    assert "/ai/new" in [memcg(s) for s in schemes_of(w, HOT)]
    assert e.apply(None, 20.0).transfers == ()  # type: ignore[arg-type]
    e.stop()


def test_damos_past_the_bound_logs_once_and_says_so_in_status(tmp_path: Path):
    fs = damos_host(tmp_path)
    cgroups(fs, "/big", *(f"/big/{i:02d}" for i in range(MAX_MEMCGS + 1)))
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"))
    e.configure(TOPO3, build_policy({"processes": {"manage": [{"cgroup": "/big"}]}}))
    assert e.live_uses() == (f"memcg_schemes:{MAX_MEMCGS}/{MAX_MEMCGS + 2}",)
    (line,) = e.apply(None, 1.0).errors  # type: ignore[arg-type]
    assert "not covered: /big/15, /big/16" in line
    e.sample(1.0)
    e.sample(1.0 + RESCAN_S)  # same cgroups: no new line
    assert e.apply(None, 2.0).errors == ()  # type: ignore[arg-type]
    e.stop()


def tenant_policy() -> object:
    return build_policy(
        {
            "processes": {"manage": [{"cgroup": "/t"}]},
            "rate_limit": {"mb_per_s": 96},
            "tenants": [
                {"name": "lat", "match": {"cgroup": "/t/lat"}, "fast_min": "96MiB", "fast_max": "192MiB", "weight": 3},
            ],
        }
    )


def test_damos_tenant_goals_where_the_kernel_has_node_memcg_used_bp(tmp_path: Path):
    fs = damos_host(tmp_path)  # node 0: 384 MiB
    cgroups(fs, "/t", "/t/lat", "/t/hog")
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"), NEW)
    pol = tenant_policy()
    e.configure(TOPO3, pol)  # type: ignore[arg-type]
    hot = schemes_of(dict(fs.writes), HOT)
    goal = [s for s in hot if s.get("quotas/goals/nr_goals") == "1"]
    assert [memcg(s) for s in goal] == ["/t/lat", "/t/lat"]  # one per slow node
    g = goal[0]
    assert (g["action"], g["quotas/goals/0/target_metric"], g["quotas/goals/0/nid"]) == (
        "migrate_hot",
        "node_memcg_used_bp",
        "0",
    )
    assert g["quotas/goals/0/path"] == "/t/lat" and g["quotas/goals/0/target_value"] == str(96 * 10000 // 384)
    cold = schemes_of(dict(fs.writes), COLD)
    (cap,) = [s for s in cold if s.get("quotas/goals/0/target_metric") == "node_memcg_free_bp"]
    assert cap["action"] == "migrate_cold" and memcg(cap) == "/t/lat"
    assert cap["quotas/goals/0/target_value"] == str(10000 - 192 * 10000 // 384)
    assert "tenants:node_memcg_used_bp" in uses(NEW, pol)  # type: ignore[arg-type]
    e.stop()


def test_damos_tenant_weights_as_quotas_where_the_kernel_lacks_the_goal(tmp_path: Path):
    fs = damos_host(tmp_path)
    cgroups(fs, "/t", "/t/lat", "/t/hog")
    old = DamonFeatures(probed=True, goal_metrics=("user_input", "node_mem_used_bp", "node_mem_free_bp"))
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"), old)
    pol = tenant_policy()
    e.configure(TOPO3, pol)  # type: ignore[arg-type]
    hot = schemes_of(dict(fs.writes), HOT)
    assert not any("quotas/goals/nr_goals" in s for s in hot)
    quota = {memcg(s): int(s["quotas/bytes"]) for s in hot if s["action"] == "migrate_hot"}
    # 48 MiB/s for promotion over two slow nodes; lat 3/4 of it, other's two cgroups 1/8 each
    assert quota == {"/t/lat": 18 * MiB, "/t": 3 * MiB, "/t/hog": 3 * MiB}
    assert "tenants:weighted_quota" in uses(old, pol)  # type: ignore[arg-type]
    e.stop()
