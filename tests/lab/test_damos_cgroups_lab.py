"""The DAMOS engine and cgroups on the real kernel: descendants of a managed cgroup, found again while it runs, and
tenants' shares as DAMOS quotas or quota goals.

The managed cgroup is the test cgroup; the memory controller is on below it, so it holds no process itself. Two
workloads, each with a 32 MiB buffer on the CXL node whose first 8 MiB are kept hot: `a` in <test>/a, started
before the daemon, and `c` in <test>/b/c (a grandchild), created and started only once the daemon runs, so the
engine must find it by enumerating again. DAMON's memcg filter matches one cgroup exactly: both hot sets reach DDR
only if both cgroups got schemes of their own. Checked in the kernel's view (move_pages(2) queries of the buffers,
DAMON's sysfs files: the memcg paths of the schemes, the quotas, the tenant's goal) and in `status`.

Tenant `lat` (cgroup <test>/a, fast_min 16 MiB, weight 3): where the kernel accepts the node_memcg_used_bp goal
(7.3), promotion schemes restricted to <test>/a carry that goal (nid 0, path <test>/a, 16 MiB in basis points of
node 0) and the kernel keeps running with it; elsewhere (6.12) the promotion quota of <test>/a's schemes is 3 times
that of the other cgroups' group, and `status` names the mechanism. Its cap (fast_max 512 MiB) becomes, on 7.3, a
demotion scheme for <test>/a with a node_memcg_free_bp goal (10000 minus the cap in basis points of node 0).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import CGROUP_ROOT, DaemonFactory, LabDaemon, Workload, accepted_by_hand, read, remove_cgroup

MIB, HOT_MIB = 32, 8
DDR = (0, 1)
KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")
GUARANTEE_MIB, CAP_MIB = 16, 512
TIMEOUT_S = 180.0


@pytest.fixture
def sub_cgroups(test_cgroup: str) -> Iterator[Callable[[str], str]]:
    """make(rel): create <test>/rel (memory controller on in every parent below the test cgroup); all removed,
    their processes SIGKILLed, at teardown (deepest first)."""
    made: list[Path] = []
    top = CGROUP_ROOT / test_cgroup.strip("/")
    (top / "cgroup.subtree_control").write_text("+memory")

    def make(rel: str) -> str:
        path = top
        for part in rel.split("/"):
            if path != top and "memory" not in read(path / "cgroup.subtree_control").split():
                (path / "cgroup.subtree_control").write_text("+memory")
            path = path / part
            if not path.exists():
                path.mkdir()
                made.append(path)
        return f"{test_cgroup}/{rel}"

    yield make
    for c in reversed(made):
        remove_cgroup(c)


def hot_on_ddr(w: Workload, pages_on_nodes: Callable[[int, int, int], dict[int, int]]) -> float:
    hot = pages_on_nodes(w.pid, w.addr, w.hot_length)
    return sum(v for n, v in hot.items() if n in DDR) / (w.hot_length // w.page_size)


def schemes(kdamond: int) -> list[Path]:
    base = KDAMONDS / f"{kdamond}/contexts/0/schemes"
    return sorted(base.glob("[0-9]*"), key=lambda p: int(p.name))


def memcg_filters(scheme: Path, matching: str) -> list[str]:
    """The memcg paths of a scheme's memcg filters: matching N "only this cgroup", Y "not this cgroup"."""
    f = scheme / "filters"
    return [
        read(f / f"{i}/memcg_path")
        for i in range(int(read(f / "nr_filters")))
        if read(f / f"{i}/type") == "memcg" and read(f / f"{i}/matching") == matching
    ]


def memcg_of(scheme: Path) -> str | None:
    only = memcg_filters(scheme, "N")
    return only[0] if only else None


def wait_promoted(
    d: LabDaemon, ws: dict[str, Workload], pages_on_nodes: Callable[[int, int, int], dict[int, int]]
) -> dict[str, float]:
    """Wait until >= 90% of every workload's hot set is on DDR; the shares then."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        got = {name: hot_on_ddr(w, pages_on_nodes) for name, w in ws.items()}
        if all(v >= 0.9 for v in got.values()):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"hot shares on DDR after {TIMEOUT_S:g}s: {got}:\n{d.tail()}")
        d.alive()
        time.sleep(1.0)


@pytest.mark.usefixtures("no_kernel_migration")
def test_damos_covers_descendant_cgroups_found_while_running(
    cxl_node: int,
    workload: Callable[..., Workload],
    test_cgroup: str,
    sub_cgroups: Callable[[str], str],
    lab_daemon: DaemonFactory,
    pages_on_nodes: Callable[[int, int, int], dict[int, int]],
) -> None:
    accepts = accepted_by_hand({"goal": ("node_memcg_used_bp", "node_memcg_free_bp")})
    a = sub_cgroups("a")
    wa = workload(cxl_node, MIB, HOT_MIB, cgroup=a, cpu=0, companion=True)
    doc: dict[str, Any] = {
        "engine": "damos",
        "interval": "1s",
        "cooldown": "30s",
        "processes": {"manage": [{"cgroup": test_cgroup}], "min_rss": "1MiB"},
        "tenants": [
            {
                "name": "lat",
                "match": {"cgroup": a},
                "fast_min": f"{GUARANTEE_MIB}MiB",
                "fast_max": f"{CAP_MIB}MiB",
                "weight": 3,
            }
        ],
    }
    d = lab_daemon(doc)
    wait_promoted(d, {"a": wa}, pages_on_nodes)
    # a grandchild appears while the daemon runs: found at the next enumeration (5 s), its hot set promoted too
    c = sub_cgroups("b/c")
    wc = workload(cxl_node, MIB, HOT_MIB, cgroup=c, cpu=1, companion=True)
    got = wait_promoted(d, {"a": wa, "c": wc}, pages_on_nodes)
    print(f"damos cgroups: hot share on DDR {got}")

    hot = schemes(0)
    migrate = [s for s in hot if read(s / "action") == "migrate_hot"]
    # lat's group: <test>/a alone; other's (<test>, <test>/b, <test>/b/c): every other memcg excluded
    assert [memcg_of(s) for s in migrate[:2]] == [a, a] and memcg_filters(migrate[0], "Y") == []
    for s in migrate[2:4]:
        assert memcg_of(s) is None and {"/", a} <= set(memcg_filters(s, "Y")), memcg_filters(s, "Y")
        assert not {test_cgroup, f"{test_cgroup}/b", c} & set(memcg_filters(s, "Y"))
    st = d.status()
    used = set(st["kernel_features_used"])
    assert "memcg_schemes:4/4" in used, used
    quota = {memcg_of(s): int(read(s / "quotas/bytes")) for s in migrate[:4]}
    if "goal:node_memcg_used_bp" in accepts:
        assert "tenants:node_memcg_used_bp" in used
        goal = [s for s in hot if read(s / "quotas/goals/nr_goals") == "1"]
        assert len(goal) == 2 and all(memcg_of(s) == a for s in goal), [memcg_of(s) for s in goal]
        g = goal[0] / "quotas/goals/0"
        total = int(re.search(r"MemTotal:\s+(\d+) kB", read("/sys/devices/system/node/node0/meminfo")).group(1)) << 10  # type: ignore[union-attr]
        assert read(g / "target_metric") == "node_memcg_used_bp" and read(g / "nid") == "0"
        assert read(g / "path") == a
        assert int(read(g / "target_value")) == (GUARANTEE_MIB << 20) * 10000 // total
        print(f"damos cgroups: tenant goal {read(g / 'target_value')} bp of node 0 for {a}, accepted")
        # the cap: a demotion scheme for <test>/a before the general one, tuned on node_memcg_free_bp
        cap = KDAMONDS / "1/contexts/0/schemes/1"
        cg = cap / "quotas/goals/0"
        assert read(cap / "action") == "migrate_cold" and memcg_of(cap) == a
        assert "goal:node_memcg_free_bp" in accepts  # 7.3 has both
        assert read(cg / "target_metric") == "node_memcg_free_bp" and read(cg / "path") == a
        assert int(read(cg / "target_value")) == 10000 - (CAP_MIB << 20) * 10000 // total
    else:
        assert "tenants:weighted_quota" in used
        # weights: lat 3, other 1 (other's three cgroups in one group)
        assert abs(quota[a] - 3 * quota[None]) <= 3 * 4096, quota
        print(f"damos cgroups: weighted promotion quotas {quota}")
    assert all(read(KDAMONDS / f"{i}/state") == "on" for i in (0, 1))  # the kernel took every commit
    assert d.stop() == 0, d.tail()
    assert read(KDAMONDS / "nr_kdamonds") == "0"
