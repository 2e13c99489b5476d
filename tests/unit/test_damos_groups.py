"""The DAMOS engine's cgroup coverage and tenant schemes: the pure plan (damos_groups) and the files written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxltierd.engines.damon import KDAMONDS, Kdamonds
from cxltierd.engines.damon_probe import DamonFeatures
from cxltierd.engines.damos import RESCAN_S, DamosEngine, uses
from cxltierd.engines.damos_groups import MAX_EXCLUDE, MAX_MEMCGS, Group, cover, coverage, shares, tenant_for
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


def memcgs(s: dict[str, str], matching: str) -> list[str]:
    """memcg paths of a scheme's memcg filters: matching N "only this cgroup", Y "not this cgroup"."""
    n = int(s.get("filters/nr_filters", "0"))
    return [
        s[f"filters/{i}/memcg_path"]
        for i in range(n)
        if s[f"filters/{i}/type"] == "memcg" and s[f"filters/{i}/matching"] == matching
    ]


def memcg(s: dict[str, str]) -> str | None:
    only = memcgs(s, "N")
    return only[0] if only else None


def test_tenant_for_takes_the_longest_cgroup_prefix():
    ts = tenants(
        {"name": "ai", "match": {"cgroup": "/ai"}},
        {"name": "inf", "match": {"cgroup": "/ai/inf/"}},
        {"name": "byname", "match": {"name": "x"}},
    )
    assert tenant_for(ts, "/ai/inf/w1") == "inf" and tenant_for(ts, "/ai/train") == "ai"
    assert tenant_for(ts, "/aix") == "other" and tenant_for(ts, "/") == "other"


def test_shares_follow_weights():
    ts = tenants({"name": "lat", "match": {"cgroup": "/a"}, "weight": 3})
    got = shares([Group(("/a",), "/a", tenant="lat"), Group(("/b", "/c"), exclude=("/",))], ts)
    assert [g.share for g in got] == pytest.approx([0.75, 0.25])


def test_a_set_of_cgroups_is_every_other_memcg_excluded():
    every = ["/", "/a", "/a/x", "/b"]
    assert cover(["/a"], every) == Group(("/a",), memcg="/a")
    assert cover(["/a", "/a/x"], every) == Group(("/a", "/a/x"), exclude=("/", "/b"))
    assert cover(["/a", "/a/x"], None) is None  # the host's memcgs unknown: cannot be expressed
    many = ["/a", "/a/x", *(f"/o{i}" for i in range(MAX_EXCLUDE + 1))]
    assert cover(["/a", "/a/x"], many) is None


def test_coverage_is_bounded_and_says_what_it_left_out():
    found = [f"/m/{i}" for i in range(MAX_MEMCGS + 3)] + ["/m/0"]  # a duplicate counts once
    cov = coverage(found, False, (), (), 0, 0, ["/", "/m", *found])
    (group,) = cov.groups
    assert group.members == tuple(found[:MAX_MEMCGS]) and set(group.exclude) == {"/", "/m", *found[MAX_MEMCGS:-1]}
    assert cov.union == Group(group.members, exclude=group.exclude)
    assert cov.dropped == tuple(found[MAX_MEMCGS : MAX_MEMCGS + 3]) and cov.found == MAX_MEMCGS + 3
    note = cov.note()
    assert note is not None and f"{MAX_MEMCGS} get DAMOS schemes" in note and f"/m/{MAX_MEMCGS}" in note
    assert cov.status() == (f"memcg_schemes:{MAX_MEMCGS}/{MAX_MEMCGS + 3}",)
    assert coverage(found[:2], False, (), (), 0, 0, found).note() is None
    # the host's memcgs unknown (too many to list): the first cgroup alone, the rest said
    alone = coverage(found[:3], False, (), (), 0, 0, None)
    assert alone.union == Group(("/m/0",), "/m/0") and alone.dropped == ("/m/1", "/m/2")
    # nothing found (yet): no group, nothing to demote
    assert coverage([], False, (), (), 0, 0, []).union is None


def test_coverage_goals_only_where_the_kernel_has_them():
    ts = tenants(
        {"name": "lat", "match": {"cgroup": "/a"}, "fast_min": "100MiB", "fast_max": "200MiB"},
        {"name": "batch", "match": {"cgroup": "/b"}, "weight": 2},
    )
    total = 1000 * MiB
    every = ["/", "/a", "/a/x", "/b"]
    new = coverage(["/a", "/a/x", "/b"], False, ts, NEW.goal_metrics, total, 2 * total, every)
    assert new.mechanism == "node_memcg_used_bp"
    (goal,) = new.goals  # batch has neither a guarantee nor a cap
    assert (goal.tenant, goal.path, goal.used_bp, goal.free_bp) == ("lat", "/a", 1000, 8000)
    assert goal.group.members == ("/a", "/a/x") and goal.group.exclude == ("/", "/b")
    old = coverage(["/a", "/a/x", "/b"], False, ts, ("user_input",), total, 2 * total, every)
    assert old.mechanism == "weighted_quota" and old.goals == ()
    assert [(g.tenant, g.share) for g in old.groups] == [("lat", pytest.approx(1 / 3)), ("batch", pytest.approx(2 / 3))]
    # no cgroup selector in processes.manage: all memory, the tenants' cgroups apart
    everything = coverage(["/a"], True, ts, (), total, total)
    assert everything.groups[0].memcg is None and everything.groups[0].exclude == ("/a",)


def test_damos_gives_every_descendant_cgroup_its_own_schemes(tmp_path: Path):
    fs = damos_host(tmp_path)
    cgroups(fs, "/ai", "/ai/x", "/ai/x/y", "/web", "/system")
    cgroups(fs, "/ai/nomem", memory=False)  # no memory controller: no memcg to match
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"))
    pol = build_policy(
        {"processes": {"manage": [{"cgroup": "/ai"}, {"cgroup": "/web"}]}, "rate_limit": {"mb_per_s": 80}}
    )
    e.configure(TOPO3, pol)
    hot = schemes_of(dict(fs.writes), HOT)
    # one scheme per slow node for the four cgroups: every other memcg excluded, before the young check
    assert [s["action"] for s in hot] == ["stat", "migrate_hot", "migrate_hot", "lru_deprio"]
    for s in hot[1:]:
        assert memcg(s) is None and memcgs(s, "Y") == ["/", "/system"] and s["filters/2/type"] == "young"
    assert hot[1]["quotas/bytes"] == str(20 * MiB) and hot[1]["access_pattern/age/min"] == "1"
    cold = schemes_of(dict(fs.writes), COLD)
    assert len(cold) == 2 and memcgs(cold[1], "Y") == ["/", "/system"]
    assert e.live_uses() == ("memcg_schemes:4/4",)
    # what each scheme moved is charged to its own source node
    for i, applied in ((1, 4 * MiB), (2, 8 * MiB)):
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
    # covered by the same schemes (nothing else to exclude): nothing to commit, one more cgroup said covered
    assert e.live_uses() == ("memcg_schemes:5/5",) and not any(p.endswith("memcg_path") for p in w)
    cgroups(fs, "/unmanaged")  # a new cgroup outside: excluded at the next enumeration
    fs.writes.clear()
    e.sample(10.0 + 2 * RESCAN_S)
    assert [v for p, v in fs.writes if p.endswith("/memcg_path")].count("/unmanaged") == 4  # 2 hot, cold, prime
    assert (f"{KDAMONDS}/0/state", "commit") in fs.writes and (f"{KDAMONDS}/1/state", "commit") in fs.writes
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
    assert [s["action"] for s in hot] == ["stat", *["migrate_hot"] * 6, "lru_deprio"]
    assert [memcg(s) for s in hot[1:5]] == ["/t/lat", "/t/lat", None, None]  # lat, then other: /t and /t/hog
    assert [s["access_pattern/age/min"] for s in hot[1:7]] == ["1", "1", "0", "0", "0", "0"]
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
    assert [s.get("quotas/goals/0/target_metric") for s in cold] == [None, "node_memcg_free_bp", "user_input"]
    cap = cold[1]  # before the general demotion scheme
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
    # 48 MiB/s for promotion over two slow nodes; lat 3/4 of it, other (/t and /t/hog) 1/4
    assert quota == {"/t/lat": 18 * MiB, None: 6 * MiB}
    assert "tenants:weighted_quota" in uses(old, pol)  # type: ignore[arg-type]
    e.stop()
