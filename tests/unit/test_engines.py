"""Real-kernel engines against fake sysfs trees: the exact writes, ownership, restore, selection."""

from __future__ import annotations

import errno
import json
import os
from array import array
from pathlib import Path

import pytest

from cxltierd.discovery.live import node_memory, node_ranges
from cxltierd.engines import syscalls
from cxltierd.engines.damon import (
    KDAMONDS,
    Context,
    DamonBusy,
    DamonRegion,
    Kdamonds,
    Scheme,
    Target,
    commit_writes,
    context_writes,
)
from cxltierd.engines.damon_stat import PARAM as DAMON_STAT
from cxltierd.engines.damon_stat import DamonStat
from cxltierd.engines.damon_stat import enabled as damon_stat_enabled
from cxltierd.engines.damon_tracker import DamonTracker, chunk_nodes, chunk_size, chunks
from cxltierd.engines.damos import DamosEngine
from cxltierd.engines.numa_balancing import DEMOTION, NUMA_BALANCING, RATE_LIMIT, NumaBalancingEngine
from cxltierd.engines.registry import Env, probes
from cxltierd.engines.select import choose
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.facts import Damon, KernelFacts
from cxltierd.hostfs import HostFS
from cxltierd.model import Plan
from cxltierd.policy.gates import kernel_gates
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import Policy, build_policy
from cxltierd.topology import Node, Tier, Topology

MiB = 1 << 20
GiB = 1 << 30
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

    assert choose("auto", Env(kernel())).engine == "damos"
    assert choose("auto", Env(kernel((6, 8)))).engine == "move_pages"
    c = choose("auto", Env(kernel(), foreign_kdamonds=("kdamond 0 (on, pid 9)",)))
    assert c.engine == "numa_balancing" and "DAMON in use by another tool" in c.conflicts[0]
    c = choose("auto", Env(kernel(), tiering_by_other="kernel.numa_balancing is already 2"))
    assert (
        c.engine == "numa_balancing"
        and "watching" in c.reason
        and c.conflicts == ("kernel.numa_balancing is already 2",)
    )
    assert choose("auto", Env(kernel(damon=False))).engine == "numa_balancing"
    with pytest.raises(CxltierdError, match="no engine can run"):
        choose("auto", Env(kernel(damon=False, nb=None)))
    with pytest.raises(CxltierdError, match=r"engine damos cannot run here: it needs .* kernel >= 6.11 \(kernel 6.8.0"):
        choose("damos", Env(kernel((6, 8))))
    assert choose("move_pages", Env(kernel())).reason == "asked for in the policy"
    # doctor reads the same probes: every selectable engine, None where it can run
    assert probes(Env(kernel((6, 8)))) == {
        "damos": "needs DAMON sysfs not in use by another tool and a kernel >= 6.11 (kernel 6.8.0, DAMON present)",
        "move_pages": None,
        "numa_balancing": None,
        "simulated": "is the emulated backend's engine (--backend emulated)",
    }


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
    fs.path("/sys/fs/cgroup/ai").mkdir(parents=True)
    fs.path("/sys/fs/cgroup/ai/memory.current").write_text("0\n")
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"))
    pol = build_policy({"processes": {"manage": [{"cgroup": "/ai"}]}, "rate_limit": {"mb_per_s": 100}})
    e.configure(TOPO, pol)
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
    gate_by_marks(e, fs, TOPO, pol)
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
    assert c[0x200000] == pytest.approx((100.0, 0.3)) and c[0x400000] == pytest.approx((100.0, 0.3))
    assert c[0x600000][0] == pytest.approx(0.0) and set(c) == {0x200000, 0x400000, 0x600000}

    class Pages:
        def query(self, pid, addrs):
            # first chunk on node 4, second half node 0 / half node 4, third not present
            return array(
                "i",
                [4 if a < 0x400000 else (0 if a < 0x500000 else 4) if a < 0x600000 else -errno.ENOENT for a in addrs],
            )

    nodes = chunk_nodes(7, [0x200000, 0x400000, 0x600000], 2 * MiB, Pages(), syscalls.PAGE_SIZE)
    assert nodes[0x200000] == 4 and nodes[0x400000] in (0, 4) and 0x600000 not in nodes


def test_chunks_grow_past_the_bound_and_keep_their_size_within_a_factor_of_four():
    assert chunk_size(16 * GiB, 2 * MiB, 8192, 2 * MiB) == 2 * MiB  # 8192 chunks: at the bound
    assert chunk_size(16 * GiB + 1, 2 * MiB, 8192, 2 * MiB) == 4 * MiB
    assert chunk_size(1 << 40, 2 * MiB, 8192, 2 * MiB) == 128 * MiB  # 1 TiB: 8192 chunks of 128 MiB
    assert chunk_size(1 << 40, 2 * MiB, 0, 2 * MiB) == 2 * MiB  # 0: never grows
    # shrinking memory keeps the size until it is four times what is wanted
    assert chunk_size(300 * GiB, 2 * MiB, 8192, 128 * MiB) == 128 * MiB  # wants 64 MiB: kept
    assert chunk_size(100 * GiB, 2 * MiB, 8192, 128 * MiB) == 16 * MiB  # wants 16 MiB: 128 is 8x, shrinks


def test_tracker_cuts_big_processes_into_bigger_chunks(tmp_path):
    class OnNode4:
        def query(self, pid, addrs):
            return array("i", [4] * len(addrs))

    fs = FakeDamon(tmp_path)
    add_process(fs, 77, "train", 64 * 1024, "/ai")  # 64 MiB: 32 chunks of 2 MiB, over a bound of 8
    policy = build_policy({"processes": {"min_rss": "1MiB"}, "damon": {"max_chunks": 8}})
    t = DamonTracker(fs, policy, Kdamonds(fs, tmp_path / "k.json"), [0, 4], pages=OnNode4())
    t.sample(10.0)
    tried = f"{KDAMONDS}/0/contexts/0/schemes/0/tried_regions/0"
    for name, value in (("start", 0), ("end", 64 * MiB), ("nr_accesses", 5), ("age", 3)):
        fs.write(f"{tried}/{name}", str(value), record=False)
    regions = t.sample(13.0).regions
    assert [(r.start, r.size) for r in regions] == [(i * 8 * MiB, 8 * MiB) for i in range(8)]
    assert t.chunk == 8 * MiB


def add_process(fs: HostFS, pid: int, name: str, rss_kb: int, cgroup: str) -> None:
    d = fs.path(f"/proc/{pid}")
    d.mkdir(parents=True)
    (d / "status").write_text(f"Name:\t{name}\nVmRSS:\t{rss_kb} kB\n")
    (d / "cmdline").write_text(f"{name}\0--flag")
    (d / "cgroup").write_text(f"0::{cgroup}\n")


def test_tracker_selects_managed_processes_largest_first(tmp_path):
    fs = FakeDamon(tmp_path)
    for pid, name, rss_kb, cg in (
        (10, "small", 1000, "/"),
        (11, "big", 900000, "/ai"),
        (12, "sshd", 800000, "/system.slice/ssh"),
    ):
        add_process(fs, pid, name, rss_kb, cg)
    policy = build_policy({"processes": {"exclude": [{"cgroup": "/system.slice"}], "min_rss": "64MiB"}})
    t = DamonTracker(fs, policy, Kdamonds(fs, tmp_path / "run/k.json"), [0, 4])
    from cxltierd.discovery.live import list_processes

    picked = t.select(list_processes(fs))
    assert [p.pid for p in picked] == [11] and picked[0].cmdline == "big --flag" and picked[0].cgroup == "/ai"


def test_tracker_reads_a_new_kdamond_only_after_its_warm_up(tmp_path):
    class OnNode4:
        def query(self, pid, addrs):
            return array("i", [4] * len(addrs))

    fs = FakeDamon(tmp_path)
    add_process(fs, 77, "train", 900000, "/ai")
    policy = build_policy({"processes": {"min_rss": "1MiB"}})  # 100 ms aggregations: warm after 2 s
    t = DamonTracker(fs, policy, Kdamonds(fs, tmp_path / "k.json"), [0, 4], pages=OnNode4())
    assert t.sample(10.0).regions == () and t.targets == [77]  # starts the kdamond
    tried = f"{KDAMONDS}/0/contexts/0/schemes/0/tried_regions/0"
    for name, value in (("start", 0x200000), ("end", 0x600000), ("nr_accesses", 5), ("age", 3)):
        fs.write(f"{tried}/{name}", str(value), record=False)
    assert t.sample(11.9).regions == ()  # its regions still straddle edges they have not found
    heat = [(r.pid, r.start, r.node, r.accesses) for r in t.sample(12.5).regions]
    assert [h[:3] for h in heat] == [(77, 0x200000, 4), (77, 0x400000, 4)]
    assert [h[3] for h in heat] == pytest.approx([50.0, 50.0])
    # a new managed process gets the next kdamond of the pool: only that one warms up, 77's goes on reporting
    add_process(fs, 78, "serve", 800000, "/ai")
    fs.writes.clear()
    assert {r.pid for r in t.sample(13.0).regions} == {77} and t.targets == [77, 78]
    assert (f"{KDAMONDS}/0/state", "off") not in fs.writes and (f"{KDAMONDS}/1/state", "on") in fs.writes
    assert not any(p.endswith("nr_kdamonds") for p, _ in fs.writes)  # the pool was made once
    tried1 = f"{KDAMONDS}/1/contexts/0/schemes/0/tried_regions/0"
    for name, value in (("start", 0x800000), ("end", 0xA00000), ("nr_accesses", 1), ("age", 1)):
        fs.write(f"{tried1}/{name}", str(value), record=False)
    assert {r.pid for r in t.sample(15.5).regions} == {77, 78}
    # 77 exits (its kdamond stops by itself): its slot is free again, 78's kdamond is left alone
    fs.path(f"{KDAMONDS}/0/state").write_text("off\n")
    import shutil

    shutil.rmtree(fs.path("/proc/77"))
    fs.writes.clear()
    assert {r.pid for r in t.sample(16.0).regions} == {78} and t.targets == [78]
    assert [v for p, v in fs.writes if p.startswith(f"{KDAMONDS}/1/")] == ["update_schemes_tried_regions"]


class BusyDamon(FakeDamon):
    """DAMON sysfs whose mutex is taken for the first `busy` accesses to state/nr_* files (EBUSY, as on 6.12)."""

    def __init__(self, root: Path, busy: int) -> None:
        super().__init__(root)
        self.busy = busy

    def _maybe_busy(self, kpath: str) -> None:
        name = kpath.rsplit("/", 1)[-1]
        if self.busy > 0 and (name in ("state", "pid") or name.startswith("nr_")):
            self.busy -= 1
            raise HostFSError(str(self.path(kpath)), f"write failed ({os.strerror(errno.EBUSY)})", errno.EBUSY)

    def write(self, kpath: str, value: str, record: bool = True) -> None:  # type: ignore[override]
        if record:
            self._maybe_busy(kpath)
        super().write(kpath, value, record)

    def read(self, kpath: str) -> str:
        self._maybe_busy(kpath)
        return super().read(kpath)


def test_kdamonds_retry_while_damon_sysfs_is_busy(tmp_path):
    fs = BusyDamon(tmp_path, busy=5)
    slept: list[float] = []
    k = Kdamonds(fs, tmp_path / "run/k.json", sleep=slept.append)
    k.start([ctx(7)])
    assert k.state(0) == "on" and len(slept) == 5 and fs.busy == 0
    # busy for longer than BUSY_RETRY_S: the error comes through
    fs.busy = 10**6
    clock = iter(range(0, 100))
    k2 = Kdamonds(fs, tmp_path / "run/k.json", sleep=lambda s: None, clock=lambda: float(next(clock)))
    with pytest.raises(HostFSError, match="Device or resource busy"):
        k2.state(0)


def test_commit_writes_only_what_changed_unless_the_structure_changed():
    one = Context(operations="paddr", targets=(Target(regions=((0, 4096),)),), schemes=(Scheme(), Scheme("stat")))
    hot = Context(operations="paddr", targets=one.targets, schemes=(Scheme(), Scheme("migrate_hot", target_nid=0)))
    old, new = context_writes(0, one), context_writes(0, hot)
    assert commit_writes(old, new) == [
        (f"{KDAMONDS}/0/contexts/0/schemes/1/action", "migrate_hot"),
        (f"{KDAMONDS}/0/contexts/0/schemes/1/target_nid", "0"),
    ]
    more = Context(operations="paddr", targets=one.targets, schemes=(Scheme(), Scheme(), Scheme()))
    full = commit_writes(old, context_writes(0, more))
    assert (f"{KDAMONDS}/0/contexts/0/schemes/nr_schemes", "3") in full
    assert not any(p.endswith("/contexts/nr_contexts") for p, _ in full)  # never re-create the context
    assert commit_writes(old, old) == []


def test_scheme_filters_young_addr_and_prime():
    s = Scheme("migrate_hot", memcg="/cg", young=True, exclude=((1 << 30, 2 << 30),))
    w = context_writes(0, Context(operations="paddr", targets=(Target(regions=((0, 1),)),), schemes=(s,)))
    f = f"{KDAMONDS}/0/contexts/0/schemes/0/filters"
    d = dict(w)
    assert d[f"{f}/nr_filters"] == "3"
    assert (d[f"{f}/0/type"], d[f"{f}/1/type"], d[f"{f}/1/matching"]) == ("memcg", "young", "N")
    assert (d[f"{f}/2/type"], d[f"{f}/2/addr_start"], d[f"{f}/2/addr_end"], d[f"{f}/2/matching"]) == (
        "addr",
        str(1 << 30),
        str(2 << 30),
        "Y",
    )
    prime = dict(context_writes(0, Context("paddr", (Target(),), (Scheme("lru_deprio", young=False, anon_both=True),))))
    assert [prime[f"{f}/{i}/type"] for i in range(3)] == ["young", "anon", "anon"]
    assert [prime[f"{f}/{i}/matching"] for i in range(3)] == ["Y", "Y", "N"]  # young excluded, then everything else


def damos_host(tmp_path: Path, kind: type[FakeDamon] = FakeDamon) -> FakeDamon:
    """Nodes 0, 1 (DDR), 2 (unknown) and 4 (CXL) with memory blocks of 128 MiB."""
    fs = kind(tmp_path)
    bs = 128 * MiB
    fs.path("/sys/devices/system/memory").mkdir(parents=True, exist_ok=True)
    fs.path("/sys/devices/system/memory/block_size_bytes").write_text("8000000\n")
    for node, blocks in ((0, (0, 1, 2)), (1, (3, 4)), (2, (40,)), (4, (110, 111))):
        d = fs.path(f"/sys/devices/system/node/node{node}")
        d.mkdir(parents=True)
        for b in blocks:
            (d / f"memory{b}").mkdir()
        total = len(blocks) * bs
        (d / "meminfo").write_text(
            f"Node {node} MemTotal: {total // 1024} kB\nNode {node} MemFree: {total // 2048} kB\n"
        )
    return fs


TOPO3 = Topology(
    nodes=(
        Node(0, "ddr", "t", cpus=(0,)),
        Node(1, "ddr", "t", cpus=(1,)),
        Node(2, "unknown", "t"),
        Node(4, "cxl", "t"),
    ),
    tiers=(Tier("ddr", 0, (0, 1)), Tier("unknown", 1, (2,)), Tier("cxl", 2, (4,))),
)


def test_damos_one_hot_scheme_per_slow_node_and_a_prime_pass(tmp_path):
    fs = damos_host(tmp_path)
    bs = 128 * MiB
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"))
    e.configure(TOPO3, build_policy({"rate_limit": {"mb_per_s": 100}, "hotness": {"hot_threshold": 50}}))
    w = dict(fs.writes)
    s = f"{KDAMONDS}/0/contexts/0/schemes"
    assert w[f"{s}/nr_schemes"] == "4"  # stat, hot from node 2, hot from node 4, prime
    assert [w[f"{s}/{i}/action"] for i in range(4)] == ["stat", "migrate_hot", "migrate_hot", "lru_deprio"]
    # no memcg selector: young first, then node 2's scheme excludes node 4's range and the other way round
    assert (w[f"{s}/1/filters/0/type"], w[f"{s}/1/filters/1/addr_start"]) == ("young", str(110 * bs))
    assert w[f"{s}/2/filters/1/addr_start"] == str(40 * bs)
    assert w[f"{s}/1/quotas/bytes"] == str(25 * MiB)  # half the rate limit, split between the two slow nodes
    assert w[f"{s}/1/access_pattern/nr_accesses/min"] == "5"  # 50/s * 100 ms aggregation
    assert w[f"{s}/1/access_pattern/age/min"] == "1"
    assert w[f"{s}/1/access_pattern/sz/max"] == str(3 * bs // 100)  # regions DAMON has not split yet are not trusted
    assert w[f"{KDAMONDS}/0/contexts/0/monitoring_attrs/nr_regions/min"] == "100"
    # sz_applied of each hot scheme is charged to its own node (tiers told apart)
    for i, applied in ((1, 4 * MiB), (2, 8 * MiB)):
        fs.path(f"{s}/{i}/stats").mkdir(parents=True, exist_ok=True)
        fs.path(f"{s}/{i}/stats/sz_applied").write_text(str(applied))
    out = e.apply(None, 1.0)  # type: ignore[arg-type]
    assert {(t.src, t.dst): t.pages for t in out.transfers} == {(2, 0): 1024, (4, 0): 2048}
    assert e.apply(None, 2.0).transfers == ()  # type: ignore[arg-type]
    # node 2 goes away: the schemes are re-laid, what moved before is still reported once
    fs.path(f"{s}/2/stats/sz_applied").write_text(str(12 * MiB))
    gone = Topology(nodes=TOPO3.nodes[:2] + TOPO3.nodes[3:], tiers=(TOPO3.tiers[0], TOPO3.tiers[2]))
    fs.writes.clear()
    e.configure(gone, e.policy)
    assert dict(fs.writes)[f"{s}/nr_schemes"] == "3" and (f"{KDAMONDS}/0/state", "commit") in fs.writes
    assert {(t.src, t.dst): t.pages for t in e.apply(None, 3.0).transfers} == {(4, 0): 1024}  # type: ignore[arg-type]
    e.stop()


def gate_by_marks(e: DamosEngine, fs: HostFS, topo: Topology, pol: Policy) -> None:
    """What the loop does for a kernel-executed engine each tick: gates from the nodes' usage, handed to it."""
    mem = node_memory(fs, list(topo.node_ids))
    e.gate(kernel_gates(roles(topo, pol), pol, mem.available, mem.total, e.gates))


class MigratingDamon(FakeDamon):
    """DAMON whose hot scheme goes on migrating while a commit is written (its stats survive the commit)."""

    def write(self, kpath: str, value: str, record: bool = True) -> None:  # type: ignore[override]
        super().write(kpath, value, record)
        if kpath == f"{KDAMONDS}/0/state" and value == "commit":
            stat = self.path(f"{KDAMONDS}/0/contexts/0/schemes/1/stats/sz_applied")
            stat.write_text(str(int(stat.read_text()) + MiB))


def test_damos_counts_what_moves_around_a_commit(tmp_path):
    busy = damos_host(tmp_path, MigratingDamon)
    e = DamosEngine(busy, Kdamonds(busy, tmp_path / "run/k.json"))
    pol = build_policy({})
    e.configure(TOPO3, pol)
    stats = busy.path(f"{KDAMONDS}/0/contexts/0/schemes/1/stats")
    stats.mkdir(parents=True, exist_ok=True)
    (stats / "sz_applied").write_text(str(4 * MiB))
    busy.path("/sys/devices/system/node/node0/meminfo").write_text(
        f"Node 0 MemTotal: {3 * 128 * MiB // 1024} kB\nNode 0 MemFree: 1024 kB\n"
    )
    gate_by_marks(e, busy, TOPO3, pol)  # node 0 is full: promotion off, committed while 1 MiB more moves
    assert (f"{KDAMONDS}/0/state", "commit") in busy.writes
    assert {(t.src, t.dst): t.pages for t in e.apply(None, 1.0).transfers} == {(2, 0): 1280}  # type: ignore[arg-type]
    e.configure(TOPO3, build_policy({"rate_limit": {"mb_per_s": 50}}))  # a reload: new quotas, a commit, 1 MiB more
    assert {(t.src, t.dst): t.pages for t in e.apply(None, 2.0).transfers} == {(2, 0): 256}  # type: ignore[arg-type]
    e.stop()


def test_numa_balancing_hot_threshold_and_promotion_sources(tmp_path):
    fs = HostFS(tmp_path)
    hot = "/sys/kernel/debug/sched/numa_balancing/hot_threshold_ms"
    for path, value in ((NUMA_BALANCING, "0"), (DEMOTION, "false"), (RATE_LIMIT, "65536"), (hot, "1000")):
        fs.path(path).parent.mkdir(parents=True, exist_ok=True)
        fs.path(path).write_text(value + "\n")
    for n in (0, 1, 2, 4):
        fs.path(f"/sys/devices/system/node/node{n}").mkdir(parents=True)
        fs.path(f"/sys/devices/system/node/node{n}/vmstat").write_text(
            "pgpromote_success 0\nnr_anon_pages 5000\nnr_file_pages 100\n"
        )
    e = NumaBalancingEngine(fs, tmp_path / "run/nb.json")
    e.configure(TOPO3, build_policy({"hotness": {"hot_threshold": 0.25}}))
    assert (fs.read(NUMA_BALANCING), fs.read(hot)) == ("2", "4000")
    # 300 pages promoted to node 1: node 4 lost 250 user pages, node 2 lost 30 (noise elsewhere is not a source)
    fs.path("/sys/devices/system/node/node1/vmstat").write_text("pgpromote_success 300\nnr_anon_pages 5300\n")
    fs.path("/sys/devices/system/node/node4/vmstat").write_text("nr_anon_pages 4750\nnr_file_pages 100\n")
    fs.path("/sys/devices/system/node/node2/vmstat").write_text("nr_anon_pages 4970\nnr_file_pages 100\n")
    out = e.apply(None, 1.0)  # type: ignore[arg-type]
    assert {(t.src, t.dst): t.pages for t in out.transfers} == {(4, 1): 270, (2, 1): 30}
    assert sum(t.pages for t in out.transfers) == 300  # always the kernel's pgpromote_success
    e.stop()
    assert (fs.read(NUMA_BALANCING), fs.read(hot)) == ("0", "1000")


def test_tracker_reports_damon_resolution_and_asks_for_fine_regions(tmp_path):
    policy = build_policy({"damon": {"aggregation_interval": "200ms", "min_regions": 10}})
    t = DamonTracker(FakeDamon(tmp_path), policy, Kdamonds(FakeDamon(tmp_path), tmp_path / "k.json"), [0, 4])
    c = t.context(42)
    assert (c.min_regions, c.max_regions) == (100, 1000)
    assert t.sample(0.0).resolution == pytest.approx(5.0)  # one sampled access per 200 ms = 5 accesses/s


def test_damos_quota_goals_follow_what_the_kernel_offers(tmp_path):
    """The demotion scheme's goal: 6.16+ node_mem_free_bp on the fastest node, read by the kernel itself; 6.9-6.15
    user_input whose current value cxltierd writes every tick (a goals-only commit); older: fixed quotas only.
    Promotion keeps its fixed quota (a goal-tuned quota ramps up from one byte)."""
    from cxltierd.engines.damon_probe import DamonFeatures

    pol = build_policy({"watermarks": {"ddr": {"max_used_percent": 80, "min_free_percent": 10}}})
    hot, cold = f"{KDAMONDS}/0/contexts/0/schemes/1/quotas/goals", f"{KDAMONDS}/1/contexts/0/schemes/1/quotas/goals"
    new = damos_host(tmp_path / "new")
    e = DamosEngine(
        new,
        Kdamonds(new, tmp_path / "new.json"),
        DamonFeatures(True, goal_metrics=("user_input", "node_mem_used_bp", "node_mem_free_bp")),
    )
    e.configure(TOPO3, pol)
    w = dict(new.writes)
    assert (w[f"{cold}/nr_goals"], w[f"{cold}/0/target_metric"], w[f"{cold}/0/target_value"], w[f"{cold}/0/nid"]) == (
        "1",
        "node_mem_free_bp",
        "2000",
        "0",
    )
    assert not any(p.startswith(hot) for p in w)  # promotion: no goal
    new.writes.clear()
    e.sample(1.0)
    assert not any(p.endswith("/state") and v.startswith("commit") for p, v in new.writes)  # the kernel reads usage
    e.stop()

    old = damos_host(tmp_path / "old")
    e = DamosEngine(old, Kdamonds(old, tmp_path / "old.json"), DamonFeatures(True, goal_metrics=("user_input",)))
    e.configure(TOPO3, pol)
    w = dict(old.writes)
    assert (w[f"{cold}/0/target_metric"], w[f"{cold}/0/target_value"]) == ("user_input", "2000")
    assert f"{cold}/0/nid" not in w and w[f"{cold}/0/current_value"] == "10000"
    old.writes.clear()
    e.sample(1.0)  # node 0 is half used: 5000 bp free, told to the kernel
    w = dict(old.writes)
    assert w[f"{cold}/0/current_value"] == "5000"
    assert (f"{KDAMONDS}/1/state", "commit_schemes_quota_goals") in old.writes
    assert not any(v == "commit" for p, v in old.writes if p.endswith("/state"))
    e.stop()

    none = damos_host(tmp_path / "none")
    e = DamosEngine(none, Kdamonds(none, tmp_path / "none.json"), DamonFeatures(True))
    e.configure(TOPO3, pol)
    assert not any("/goals/" in p for p, _ in none.writes)
    e.stop()


def test_status_says_which_kernel_features_the_damos_engine_drives():
    from cxltierd.engines.damon_probe import DamonFeatures
    from cxltierd.engines.damos import uses

    pol = build_policy({"processes": {"manage": [{"cgroup": "/ai"}]}})
    assert "goal:user_input" in uses(DamonFeatures(True, goal_metrics=("user_input",)), pol)
    both = uses(DamonFeatures(True, goal_metrics=("user_input", "node_mem_used_bp", "node_mem_free_bp")), pol)
    assert "goal:node_mem_free_bp" in both and "goal:user_input" not in both and "filter:memcg" in both
    assert not any(u.startswith("goal:") for u in uses(DamonFeatures(), build_policy({})))


def test_damos_counts_from_exact_stats_even_where_the_kernel_refreshes_them(tmp_path):
    """refresh_ms (6.17) is written on each kdamond (the stats files stay fresh for other readers), but every tick's
    outcome is read after the update_schemes_stats command: a refreshed file can lag, since the kernel skips a
    refresh while DAMON's sysfs lock is busy (on 7.3 the daemon once counted 4071 of 4095 migrated pages that way)."""
    from cxltierd.engines.damon_probe import DamonFeatures

    for refresh in (True, False):
        fs = damos_host(tmp_path / str(refresh))
        e = DamosEngine(fs, Kdamonds(fs, tmp_path / f"k{refresh}.json"), DamonFeatures(True, refresh_ms=refresh))
        e.configure(TOPO3, build_policy({}))
        written = {p for p, _ in fs.writes if p.endswith("/refresh_ms")}
        assert written == ({f"{KDAMONDS}/0/refresh_ms", f"{KDAMONDS}/1/refresh_ms"} if refresh else set())
        fs.writes.clear()
        e.apply(Plan(), 1.0)
        asked = [p for p, v in fs.writes if v == "update_schemes_stats"]
        assert asked == [f"{KDAMONDS}/0/state", f"{KDAMONDS}/1/state"], asked
        e.stop()


class OrderedDamon(FakeDamon):
    """DAMON sysfs as kernel 7.3 has it: turning a kdamond on fails (EINVAL) when a target's regions are not in
    ascending address order."""

    def write(self, kpath: str, value: str, record: bool = True) -> None:  # type: ignore[override]
        if kpath.endswith("/state") and value == "on":
            k = kpath.rsplit("/", 1)[0]
            for t in self.path(f"{k}/contexts/0/targets").glob("[0-9]*"):
                n = int((t / "regions/nr_regions").read_text())
                starts = [int((t / f"regions/{j}/start").read_text()) for j in range(n)]
                if starts != sorted(starts):
                    raise HostFSError(f"{kpath}: {os.strerror(errno.EINVAL)}")
        super().write(kpath, value, record)


def test_damos_lists_a_targets_regions_by_address_whatever_the_tier_order(tmp_path):
    """With the CXL node (blocks 110-111) ranked before the unknown node 2 (block 40), as 7.3's lab gives, the hot
    kdamond's regions are still written node 2's first: the kernel refuses them in tier order."""
    fs = damos_host(tmp_path, OrderedDamon)
    bs = 128 * MiB
    cxl_first = Topology(
        nodes=TOPO3.nodes, tiers=(Tier("ddr", 0, (0, 1)), Tier("cxl", 1, (4,)), Tier("unknown", 2, (2,)))
    )
    e = DamosEngine(fs, Kdamonds(fs, tmp_path / "run/k.json"))
    e.configure(cxl_first, build_policy(None))
    w = dict(fs.writes)
    regions = f"{KDAMONDS}/0/contexts/0/targets/0/regions"
    assert [(w[f"{regions}/{j}/start"], w[f"{regions}/{j}/end"]) for j in range(2)] == [
        (str(40 * bs), str(41 * bs)),
        (str(110 * bs), str(112 * bs)),
    ]
    assert fs.read(f"{KDAMONDS}/0/state") == "on" and fs.read(f"{KDAMONDS}/1/state") == "on"
    assert e.sources == (4, 2)  # the schemes stay in tier order: scheme 1 still migrates node 4's memory
    e.stop()


def damon_stat_host(tmp_path: Path, value: str | None) -> HostFS:
    fs = HostFS(tmp_path)
    if value is not None:
        fs.path(DAMON_STAT).parent.mkdir(parents=True, exist_ok=True)
        fs.path(DAMON_STAT).write_text(value + "\n")
    return fs


def test_damon_stat_probe_take_over_and_restore(tmp_path):
    assert damon_stat_enabled(damon_stat_host(tmp_path / "none", None)) is None
    assert damon_stat_enabled(damon_stat_host(tmp_path / "off", "N")) is False
    fs = damon_stat_host(tmp_path / "on", "Y")
    assert damon_stat_enabled(fs) is True
    state = tmp_path / "run/damon_stat.json"
    stat = DamonStat(fs, state)
    assert stat.blocker(True) is None
    assert "turned off" in (stat.take_over() or "")
    assert fs.read(DAMON_STAT) == "N" and json.loads(state.read_text()) == {"enabled": "Y"}
    # a restart after a crash: the record says it was on, so the new daemon keeps it off and restores it at stop
    again = DamonStat(fs, state)
    assert "kept off" in (again.take_over() or "") and fs.read(DAMON_STAT) == "N"
    again.restore()
    assert fs.read(DAMON_STAT) == "Y" and not state.exists()
    again.restore()  # nothing recorded: nothing written
    assert fs.read(DAMON_STAT) == "Y"
    # not allowed by the policy: left running, and the reason names the key
    assert "damon.take_over_damon_stat is false" in (DamonStat(fs, state).blocker(False) or "")
    assert fs.read(DAMON_STAT) == "Y" and not state.exists()
    # off already, or absent: nothing to take over, nothing recorded
    assert DamonStat(damon_stat_host(tmp_path / "off", "N"), state).take_over() is None and not state.exists()
    assert DamonStat(damon_stat_host(tmp_path / "none", None), state).take_over() is None


def test_damon_stat_kept_by_the_policy_makes_the_damon_engines_unavailable():
    k = KernelFacts(release="7.3.4", version=(7, 3), numa_balancing=1, damon=Damon(sysfs=True, stat=True))
    why = "the kernel's DAMON_STAT kdamond runs (damon_stat.enabled=Y) and damon.take_over_damon_stat is false"
    c = choose("auto", Env(k, damon_blocked=why))
    assert c.engine == "numa_balancing" and c.reason.startswith(why) and c.conflicts == ()
    with pytest.raises(CxltierdError, match=r"engine damos cannot run here: .*take_over_damon_stat is false"):
        choose("damos", Env(k, damon_blocked=why))
    with pytest.raises(CxltierdError, match=r"engine move_pages cannot run here: .*DAMON_STAT"):
        choose("move_pages", Env(k, damon_blocked=why))
    assert choose("auto", Env(k)).engine == "damos"


def test_the_kdamond_pool_size_is_the_policys_and_a_new_size_makes_a_new_pool(tmp_path):
    fs = FakeDamon(tmp_path)
    for pid in (77, 78, 79):
        add_process(fs, pid, f"p{pid}", 900000 - pid, "/ai")
    small = build_policy({"processes": {"min_rss": "1MiB"}, "damon": {"max_processes": 2}})
    t = DamonTracker(fs, small, Kdamonds(fs, tmp_path / "k.json"), [0, 4], max_processes=2)
    t.sample(0.0)
    assert fs.read(f"{KDAMONDS}/nr_kdamonds") == "2" and t.targets == [77, 78]  # the two largest
    t.configure(TOPO, build_policy({"processes": {"min_rss": "1MiB"}, "damon": {"max_processes": 3}}))
    t.sample(1.0)
    assert fs.read(f"{KDAMONDS}/nr_kdamonds") == "3" and t.targets == [77, 78, 79]
    with pytest.raises(Exception, match=r"damon.max_processes: must be an integer in \[1, 64\]"):
        build_policy({"damon": {"max_processes": 65}})
