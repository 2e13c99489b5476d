"""Real-kernel engines against fake sysfs trees: the exact writes, ownership, restore, selection."""

from __future__ import annotations

import errno
import json
from array import array
from pathlib import Path

import pytest

from cxltierd.engines import syscalls
from cxltierd.engines.damon import KDAMONDS, Context, DamonBusy, DamonRegion, Kdamonds, Scheme, Target, context_writes
from cxltierd.engines.damon_tracker import DamonTracker, chunk_nodes, chunks
from cxltierd.engines.damos import DamosEngine, node_ranges
from cxltierd.engines.numa_balancing import DEMOTION, NUMA_BALANCING, RATE_LIMIT, NumaBalancingEngine
from cxltierd.engines.select import choose
from cxltierd.errors import CxltierdError
from cxltierd.facts import Damon, KernelFacts
from cxltierd.hostfs import HostFS
from cxltierd.policy.schema import build_policy
from cxltierd.topology import Node, Tier, Topology

MiB = 1 << 20
TOPO = Topology(
    nodes=(Node(0, "ddr", "t", cpus=(0,)), Node(1, "ddr", "t", cpus=(1,)), Node(4, "cxl", "t")),
    tiers=(Tier("ddr", 0, (0, 1)), Tier("cxl", 1, (4,))),
)


class FakeDamon(HostFS):
    """A HostFS over a tmp tree that behaves like DAMON sysfs for the files cxltierd writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[tuple[str, str]] = []
        self.write(f"{KDAMONDS}/nr_kdamonds", "0", record=False)

    def write(self, kpath: str, value: str, record: bool = True) -> None:  # type: ignore[override]
        if record:
            self.writes.append((kpath, value))
        p = self.path(kpath)
        p.parent.mkdir(parents=True, exist_ok=True)
        if kpath.endswith("/nr_kdamonds"):
            for i in range(int(value)):
                (self.path(f"{KDAMONDS}/{i}")).mkdir(parents=True, exist_ok=True)
                self.path(f"{KDAMONDS}/{i}/state").write_text("off\n")
                self.path(f"{KDAMONDS}/{i}/pid").write_text("-1\n")
        if kpath.endswith("/state") and value in ("on", "off"):
            self.path(kpath.rsplit("/", 1)[0] + "/pid").write_text("4242\n" if value == "on" else "-1\n")
        if kpath.endswith("/state") and value not in ("on", "off"):
            return  # commands (commit, update_*) do not change the state file
        p.write_text(value + "\n")


def ctx(pid: int = 7) -> Context:
    return Context(operations="vaddr", targets=(Target(pid=pid),))


def test_context_writes_every_bound_of_every_scheme():
    c = Context(
        operations="paddr",
        targets=(Target(regions=((0x1000, 0x2000),)),),
        schemes=(Scheme(), Scheme(action="migrate_hot", target_nid=0, nr_accesses=(2, 9), memcg="/victim")),
    )
    w = dict(context_writes(1, c))
    s = f"{KDAMONDS}/1/contexts/0/schemes/1"
    assert w[f"{KDAMONDS}/1/contexts/0/operations"] == "paddr"
    assert w[f"{KDAMONDS}/1/contexts/0/targets/0/regions/0/start"] == str(0x1000)
    assert w[f"{s}/action"] == "migrate_hot" and w[f"{s}/target_nid"] == "0"
    for name in ("sz", "nr_accesses", "age"):  # a new scheme matches nothing until all six bounds are written
        assert f"{s}/access_pattern/{name}/min" in w and f"{s}/access_pattern/{name}/max" in w
    assert (w[f"{s}/filters/0/type"], w[f"{s}/filters/0/memcg_path"], w[f"{s}/filters/0/matching"]) == (
        "memcg",
        "/victim",
        "N",
    )
    assert f"{KDAMONDS}/1/contexts/0/schemes/0/target_nid" not in w  # stat scheme: no target


def test_kdamonds_start_record_and_cleanup(tmp_path):
    fs = FakeDamon(tmp_path)
    k = Kdamonds(fs, tmp_path / "run/kdamonds.json")
    k.start([ctx(7), ctx(8)])
    assert fs.read(f"{KDAMONDS}/nr_kdamonds") == "2" and k.state(0) == "on" and k.state(1) == "on"
    assert json.loads((tmp_path / "run/kdamonds.json").read_text())["nr_kdamonds"] == 2
    assert (
        fs.read(f"{KDAMONDS}/1/contexts/0/targets/0/pid_target") == "7"
        or fs.read(f"{KDAMONDS}/1/contexts/0/targets/0/pid_target") == "8"
    )
    k.cleanup()
    assert fs.read(f"{KDAMONDS}/nr_kdamonds") == "0" and not (tmp_path / "run/kdamonds.json").exists()
    assert (f"{KDAMONDS}/0/state", "off") in fs.writes and fs.writes[-1] == (f"{KDAMONDS}/nr_kdamonds", "0")


def test_kdamonds_refuse_someone_elses_and_clean_up_a_crashed_predecessor(tmp_path):
    fs = FakeDamon(tmp_path)
    fs.write(f"{KDAMONDS}/nr_kdamonds", "1", record=False)
    fs.write(f"{KDAMONDS}/0/state", "on", record=False)
    k = Kdamonds(fs, tmp_path / "run/kdamonds.json")
    assert k.foreign() == ["kdamond 0 (on, pid 4242)"]
    fs.writes.clear()
    with pytest.raises(DamonBusy, match=r"in use by someone else \(kdamond 0 \(on, pid 4242\)\)"):
        k.start([ctx()])
    assert fs.writes == []  # not one write to another tool's kdamond
    # the same kdamond recorded as ours (we crashed): cleaned up and replaced
    (tmp_path / "run").mkdir()
    (tmp_path / "run/kdamonds.json").write_text(json.dumps({"nr_kdamonds": 1, "pid": 1}))
    assert k.foreign() == []
    k.start([ctx(9)])
    assert fs.writes[:2] == [(f"{KDAMONDS}/0/state", "off"), (f"{KDAMONDS}/nr_kdamonds", "0")]
    assert k.state(0) == "on"


def test_numa_balancing_sets_and_restores_knobs(tmp_path):
    fs = HostFS(tmp_path)
    for path, value in ((NUMA_BALANCING, "1"), (DEMOTION, "false"), (RATE_LIMIT, "65536")):
        fs.path(path).parent.mkdir(parents=True, exist_ok=True)
        fs.path(path).write_text(value + "\n")
    for n in (0, 1, 4):
        fs.path(f"/sys/devices/system/node/node{n}").mkdir(parents=True)
        fs.path(f"/sys/devices/system/node/node{n}/vmstat").write_text("pgpromote_success 0\npgdemote_kswapd 0\n")
    e = NumaBalancingEngine(fs, tmp_path / "run/nb.json")
    e.configure(TOPO, build_policy({"rate_limit": {"mb_per_s": 300}}))
    assert (fs.read(NUMA_BALANCING), fs.read(DEMOTION), fs.read(RATE_LIMIT)) == ("3", "true", "300")
    assert e.conflict is None and (tmp_path / "run/nb.json").exists()
    fs.path("/sys/devices/system/node/node0/vmstat").write_text("pgpromote_success 100\npgdemote_kswapd 5\n")
    out = e.apply(None, 1.0)  # type: ignore[arg-type]
    assert {(t.src, t.dst): t.pages for t in out.transfers} == {(4, 0): 100, (0, 4): 5}
    assert e.apply(None, 2.0).transfers == ()  # type: ignore[arg-type]  # deltas, not totals
    e.stop()
    assert (fs.read(NUMA_BALANCING), fs.read(DEMOTION), fs.read(RATE_LIMIT)) == ("1", "false", "65536")
    assert not (tmp_path / "run/nb.json").exists()
    # someone else turned tiering on: watch only, never write
    fs.path(NUMA_BALANCING).write_text("2\n")
    other = NumaBalancingEngine(fs, tmp_path / "run/nb.json")
    assert "already 2 (memory tiering)" in (other.check() or "")
    other.configure(TOPO, build_policy(None))
    assert other.watch_only and fs.read(DEMOTION) == "false"
    other.stop()
    assert fs.read(NUMA_BALANCING) == "2"


def test_select_rules():
    def kernel(version=(6, 12), damon=True, nb=1):
        return KernelFacts(
            release=f"{version[0]}.{version[1]}.0", version=version, numa_balancing=nb, damon=Damon(sysfs=damon)
        )

    assert choose("auto", kernel(), [], None).engine == "damos"
    assert choose("auto", kernel((6, 8)), [], None).engine == "move_pages"
    c = choose("auto", kernel(), ["kdamond 0 (on, pid 9)"], None)
    assert c.engine == "numa_balancing" and "DAMON in use by another tool" in c.conflicts[0]
    c = choose("auto", kernel(), [], "kernel.numa_balancing is already 2")
    assert (
        c.engine == "numa_balancing"
        and "watching" in c.reason
        and c.conflicts == ("kernel.numa_balancing is already 2",)
    )
    assert choose("auto", kernel(damon=False), [], None).engine == "numa_balancing"
    with pytest.raises(CxltierdError, match="no engine can run"):
        choose("auto", kernel(damon=False, nb=None), [], None)
    with pytest.raises(CxltierdError, match=r"engine damos cannot run here: it needs .* kernel >= 6.11 \(kernel 6.8.0"):
        choose("damos", kernel((6, 8)), [], None)
    assert choose("move_pages", kernel(), [], None).reason == "asked for in the policy"


def test_damos_programs_two_paddr_kdamonds_and_gates_by_marks(tmp_path):
    fs = FakeDamon(tmp_path)
    bs = 128 * MiB
    fs.path("/sys/devices/system/memory").mkdir(parents=True, exist_ok=True)
    fs.path("/sys/devices/system/memory/block_size_bytes").write_text("8000000\n")
    for node, blocks, total, free in (
        (0, (0, 1, 2), 3 * bs, bs),
        (1, (3, 4), 2 * bs, bs),
        (4, (110, 111), 2 * bs, 2 * bs),
    ):
        d = fs.path(f"/sys/devices/system/node/node{node}")
        d.mkdir(parents=True)
        for b in blocks:
            (d / f"memory{b}").mkdir()
        (d / "meminfo").write_text(
            f"Node {node} MemTotal: {total // 1024} kB\nNode {node} MemFree: {free // 1024} kB\n"
        )
    assert node_ranges(fs, 0) == [(0, 3 * bs)] and node_ranges(fs, 4) == [(110 * bs, 112 * bs)]
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"))
    e.configure(TOPO, build_policy({"processes": {"manage": [{"cgroup": "/ai"}]}, "rate_limit": {"mb_per_s": 100}}))
    w = dict(fs.writes)
    hot, cold = f"{KDAMONDS}/0/contexts/0", f"{KDAMONDS}/1/contexts/0"
    assert w[f"{hot}/operations"] == "paddr" and w[f"{hot}/targets/0/regions/0/start"] == str(110 * bs)
    assert w[f"{hot}/schemes/1/action"] == "migrate_hot" and w[f"{hot}/schemes/1/target_nid"] == "0"
    assert w[f"{hot}/schemes/1/quotas/bytes"] == str(50 * MiB) and w[f"{hot}/schemes/1/filters/0/memcg_path"] == "/ai"
    assert w[f"{cold}/schemes/1/action"] == "stat"  # node 0 is 67% used: below max_used, no demotion
    assert w[f"{cold}/targets/0/regions/0/end"] == str(3 * bs) and w[f"{cold}/targets/0/regions/1/start"] == str(3 * bs)
    # node 0 fills up past max_used: promotion stops, demotion starts (committed)
    fs.path("/sys/devices/system/node/node0/meminfo").write_text(
        f"Node 0 MemTotal: {3 * bs // 1024} kB\nNode 0 MemFree: 1024 kB\n"
    )
    fs.writes.clear()
    e.sample(1.0)
    w = dict(fs.writes)
    assert w[f"{hot}/schemes/1/action"] == "stat" and w[f"{cold}/schemes/1/action"] == "migrate_cold"
    assert (f"{KDAMONDS}/0/state", "commit") in fs.writes
    # outcomes are the migrate schemes' sz_applied deltas
    fs.path(f"{cold}/schemes/1/stats").mkdir(parents=True, exist_ok=True)
    fs.path(f"{cold}/schemes/1/stats/sz_applied").write_text(str(8 * MiB))
    (out,) = e.apply(None, 2.0).transfers  # type: ignore[arg-type]
    assert (out.src, out.dst, out.bytes, out.pages) == (0, 4, 8 * MiB, 2048)
    e.stop()
    assert fs.read(f"{KDAMONDS}/nr_kdamonds") == "0"


def test_tracker_chunks_and_nodes():
    regions = [DamonRegion(0x200000, 0x600000, 10, 3), DamonRegion(0x600000, 0x700000, 0, 50)]
    c = chunks(regions, 2 * MiB, 0.1)
    assert c[0x200000] == (100.0, 0.30000000000000004) and c[0x400000] == (100.0, 0.30000000000000004)
    assert c[0x600000][0] == 0.0 and set(c) == {0x200000, 0x400000, 0x600000}

    class Pages:
        def query(self, pid, addrs):
            # first chunk on node 4, second half node 0 / half node 4, third not present
            return array(
                "i",
                [4 if a < 0x400000 else (0 if a < 0x500000 else 4) if a < 0x600000 else -errno.ENOENT for a in addrs],
            )

    nodes = chunk_nodes(7, [0x200000, 0x400000, 0x600000], 2 * MiB, Pages(), syscalls.PAGE_SIZE)
    assert nodes[0x200000] == 4 and nodes[0x400000] in (0, 4) and 0x600000 not in nodes


def test_tracker_selects_managed_processes_largest_first(tmp_path):
    fs = FakeDamon(tmp_path)
    for pid, name, rss_kb, cg in (
        (10, "small", 1000, "/"),
        (11, "big", 900000, "/ai"),
        (12, "sshd", 800000, "/system.slice/ssh"),
    ):
        d = fs.path(f"/proc/{pid}")
        d.mkdir(parents=True)
        (d / "status").write_text(f"Name:\t{name}\nVmRSS:\t{rss_kb} kB\n")
        (d / "cmdline").write_text(f"{name}\0--flag")
        (d / "cgroup").write_text(f"0::{cg}\n")
    policy = build_policy({"processes": {"exclude": [{"cgroup": "/system.slice"}], "min_rss": "64MiB"}})
    t = DamonTracker(fs, policy, Kdamonds(fs, tmp_path / "run/k.json"), [0, 4])
    from cxltierd.procs import list_processes

    picked = t.select(list_processes(fs))
    assert [p.pid for p in picked] == [11] and picked[0].cmdline == "big --flag" and picked[0].cgroup == "/ai"
