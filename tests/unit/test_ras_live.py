"""RAS I/O and wiring: the tracefs instance over a tree, numa_maps, and Failover from trace lines to a drain."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cxltierd.discovery import tracefs
from cxltierd.errors import HostFSError
from cxltierd.facts import DaxDevice, HostFacts, Mapping, NodeFacts, Region
from cxltierd.failover import Failover, label_of, memdev_nodes
from cxltierd.hostfs import HostFS
from cxltierd.model import Gates, Move, Plan
from cxltierd.policy.avoid import gate_off, keep_off
from cxltierd.policy.schema import Policy, parse_policy
from cxltierd.ras import events
from cxltierd.ras.drain import DrainMove, Resident

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ras"
MiB = 1 << 20


def trace_lines(kernel: str) -> list[str]:
    return (FIXTURES / f"cxl-events-{kernel}.trace").read_text().splitlines()


def tracing_tree(root: Path, names: tuple[str, ...] = ("cxl_dram", "cxl_poison")) -> None:
    """A tracefs as the kernel shows it, with the instance the kernel would populate on mkdir made up front."""
    t = root / "sys/kernel/tracing"
    (t / "instances").mkdir(parents=True)
    inst = t / "instances" / tracefs.INSTANCE
    for base in (t, inst):
        for n in names:
            (base / "events/cxl" / n).mkdir(parents=True)
            (base / "events/cxl" / n / "enable").write_text("0\n")
        (base / "events/cxl/enable").write_text("0\n")
    (inst / "trace_pipe").write_text("")


def test_instance_enables_cxl_events_reads_once_and_is_removed(tmp_path: Path) -> None:
    tracing_tree(tmp_path)
    fs = HostFS(tmp_path)
    inst = tracefs.TraceInstance(fs)
    inst.open()
    assert inst.events == ("cxl_dram", "cxl_poison")
    base = tmp_path / "sys/kernel/tracing/instances/cxltierd"
    assert (base / "events/cxl/cxl_dram/enable").read_text() == "1"
    assert (tmp_path / "sys/kernel/tracing/events/cxl/cxl_dram/enable").read_text() == "0\n"  # global untouched
    (base / "trace_pipe").write_text("\n".join(trace_lines("6.12")) + "\n")
    got = inst.read()
    assert sum("cxl_" in line for line in got) == 4
    assert inst.read() == []  # consumed, as trace_pipe does
    inst.close()
    assert not base.exists()
    assert (tmp_path / "sys/kernel/tracing/instances").is_dir()


def test_no_tracefs_or_no_cxl_events_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "sys/devices").mkdir(parents=True)
    with pytest.raises(HostFSError, match="tracefs is not mounted"):
        tracefs.TraceInstance(HostFS(tmp_path)).open()
    (tmp_path / "sys/kernel/tracing/instances").mkdir(parents=True)
    with pytest.raises(HostFSError, match="no cxl trace events"):
        tracefs.TraceInstance(HostFS(tmp_path)).open()
    assert not (tmp_path / "sys/kernel/tracing/instances/cxltierd").exists()  # the empty instance went again


def test_node_bytes_counts_pages_times_page_size() -> None:
    maps = (
        "7f0000000000 default anon=300 dirty=300 N0=100 N4=200 kernelpagesize_kB=4\n"
        "7f1000000000 default file=/x anon=2 N4=2 kernelpagesize_kB=2048\n"
        "7f2000000000 default N14=7 kernelpagesize_kB=4\n"
    )
    assert tracefs.node_bytes(maps, 4) == 200 * 4096 + 2 * 2 * MiB
    assert tracefs.node_bytes(maps, 1) == 0


def test_poison_trigger_soft_offline_and_block_offline_write_the_files(tmp_path: Path) -> None:
    mem = tmp_path / "sys/bus/cxl/devices/mem0"
    mem.mkdir(parents=True)
    (mem / "trigger_poison_list").write_text("")
    (tmp_path / "sys/bus/cxl/devices/mem1").mkdir()  # no poison list support: skipped
    blocks = tmp_path / "sys/devices/system/memory"
    (blocks / "memory110").mkdir(parents=True)
    (blocks / "memory110/state").write_text("online\n")
    (blocks / "soft_offline_page").write_text("")
    fs = HostFS(tmp_path)
    assert tracefs.trigger_poison_lists(fs, ["mem0", "mem1"]) == []
    assert (mem / "trigger_poison_list").read_text() == "1"
    tracefs.soft_offline(fs, 0x370040123)
    assert (blocks / "soft_offline_page").read_text() == "0x370040000"
    assert tracefs.offline_blocks(fs, [110, 111]) and (blocks / "memory110/state").read_text() == "offline"


def test_every_captured_event_gets_bounded_labels() -> None:
    for kernel in ("6.12", "7.3"):
        got, errors = events.parse_lines(trace_lines(kernel))
        assert not errors and got
        labels = {label_of(e) for e in got}
        assert ("mem0", "cxl_general_media", "Failure") in labels
        assert ("mem0", "cxl_poison", "none") in labels


def test_keep_off_and_gate_off() -> None:
    plan = Plan(moves=(Move(1, 0, 4096, 0, 4, "demote"), Move(1, 4096, 4096, 4, 0, "promote")))
    kept = keep_off(plan, {4})
    assert [m.dst for m in kept.moves] == [0] and "1 moves into unhealthy node(s) 4 dropped" in kept.notes
    assert gate_off(Gates(promote=True, demote=True), (2, 4), (0,), {4}) == Gates(promote=True, demote=False)
    assert gate_off(Gates(promote=True, demote=True), (4,), (0,), {0}) == Gates(promote=False, demote=True)


def test_ras_policy_key_is_validated() -> None:
    p = parse_policy("ras: {poison_records: {degraded: 2}, drain: {rate: 64MiB, offline: true}}\n", "p.yaml")
    assert p.ras.poison_degraded == 2 and p.ras.drain_rate == 64 * MiB and p.ras.offline
    assert Policy().ras.enabled
    with pytest.raises(Exception, match=r"p.yaml: ras.drain.rat"):
        parse_policy("ras: {drain: {rat: 1}}\n", "p.yaml")
    with pytest.raises(Exception, match=r"p.yaml: ras.uncorrectable"):
        parse_policy("ras: {uncorrectable: maybe}\n", "p.yaml")


# ---- Failover over a fake loop ------------------------------------------------------------------------------------


class Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.opened = self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def read(self) -> list[str]:
        out, self.lines = self.lines, []
        return out

    def close(self) -> None:
        self.closed += 1


class Mover:
    granularity = 4096

    def __init__(self, on_node: dict[str, int]) -> None:
        self.on_node = on_node
        self.moved: list[DrainMove] = []

    def residents(self, node: int, loop: Any) -> list[Resident]:
        return [Resident(k, v) for k, v in self.on_node.items() if v]

    def move(self, moves: tuple[DrainMove, ...], loop: Any) -> tuple[int, list[str]]:
        for m in moves:
            self.on_node[m.key] -= m.size
            self.moved.append(m)
        return sum(m.size for m in moves), []


def facts() -> HostFacts:
    region = Region("region0", "/sys/bus/cxl/devices/region0", mappings=(Mapping(0, "decoder2.0", "mem0"),))
    dax = DaxDevice("dax0.0", "/x", "cxl-ram", region="region0", target_node=4)
    return HostFacts(root="/", regions=(region,), dax=(dax,), nodes=(NodeFacts(4, blocks=(110,)),))


def fake_loop(policy: Policy) -> Any:
    tiers = (SimpleNamespace(nodes=(0, 1)), SimpleNamespace(nodes=(4,)))
    usage = {0: (1024 * MiB, 600 * MiB), 1: (1024 * MiB, 100 * MiB), 4: (512 * MiB, 0)}
    last = SimpleNamespace(usage=usage, available={}, now=0.0)
    return SimpleNamespace(
        policy=policy, facts=facts(), avoid=frozenset(), last=last, topology=SimpleNamespace(tiers=tiers)
    )


def test_memdev_nodes_from_regions() -> None:
    assert memdev_nodes(facts()) == {"mem0": {4}}


def test_uncorrectable_event_fails_node_4_and_drain_keeps_the_reserve(tmp_path: Path) -> None:
    policy = parse_policy("ras: {poison_poll: 1h, drain: {rate: 100MiB, reserve: 64MiB, reserve_percent: 0}}\n")
    loop = fake_loop(policy)
    lines = Lines(trace_lines("6.12"))
    mover = Mover({"100": 300 * MiB, "200": 400 * MiB})
    f = Failover(lines, mover, HostFS(tmp_path), tmp_path / "ras.json")
    f.tick(1000.0, loop)
    assert f.states["mem0"].state == "failing" and loop.avoid == {4}
    assert 4 in f.drains
    # first step: max_step (10 s) of budget = 1000 MiB, room on node 0 = 600 - 64 MiB, node 1 = 100 - 64 MiB
    assert sum(m.size for m in mover.moved) == (536 + 36) * MiB
    assert {m.dst for m in mover.moved} == {0, 1}
    assert f.drains[4].status == "stalled" and f.drains[4].remaining == 128 * MiB
    view = f.view()
    assert view.nodes == {4: "failing"} and view.avoid == (4,)
    assert view.events[("mem0", "cxl_dram", "Failure")] == 1
    assert view.figures["mem0"]["life_used"] == 33
    saved = json.loads((tmp_path / "ras.json").read_text())
    assert saved["memdevs"]["mem0"]["state"] == "failing" and saved["drains"]["4"]["status"] == "stalled"


def test_new_health_is_published_before_the_drain_step(tmp_path: Path) -> None:
    policy = parse_policy("ras: {poison_poll: 1h}\n")
    loop = fake_loop(policy)
    mover = Mover({"100": 300 * MiB})
    f = Failover(Lines(trace_lines("6.12")), mover, HostFS(tmp_path), None)
    seen: list[tuple[dict[int, str], int]] = []
    f.tick(1000.0, loop, lambda: seen.append((dict(f.view().nodes), len(mover.moved))))
    assert seen == [({4: "failing"}, 0)]  # failing shown, nothing moved yet
    assert mover.moved  # then the drain step ran


def test_restart_resumes_the_drain_and_the_latched_state(tmp_path: Path) -> None:
    policy = parse_policy("ras: {poison_poll: 1h, drain: {rate: 1MiB, reserve: 0, reserve_percent: 0}}\n")
    loop = fake_loop(policy)
    mover = Mover({"100": 30 * MiB})
    f = Failover(Lines(trace_lines("7.3")), mover, HostFS(tmp_path), tmp_path / "ras.json")
    f.tick(1000.0, loop)
    assert f.drains[4].moved == 10 * MiB and f.drains[4].status == "running"  # rate 1 MiB/s * max_step 10 s
    f.close()
    again = Failover(Lines([]), mover, HostFS(tmp_path), tmp_path / "ras.json")  # a restart: no new event
    loop2 = fake_loop(policy)
    again.tick(1005.0, loop2)
    assert again.states["mem0"].state == "failing" and loop2.avoid == {4}
    assert again.drains[4].moved == 15 * MiB  # 5 s later at 1 MiB/s: continued, not restarted
    again.tick(1100.0, loop2)  # a long pause moves max_step's worth, no more
    assert again.drains[4].moved == 25 * MiB and again.drains[4].status == "running"
    again.tick(1110.0, loop2)
    assert again.drains[4].status == "done" and mover.on_node["100"] == 0


def test_broken_state_file_is_ignored_with_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "ras.json").write_text('{"memdevs": {"mem0": {"state": "on fire"}}}')
    f = Failover(Lines([]), Mover({}), HostFS(tmp_path), tmp_path / "ras.json")
    assert f.states == {}
    assert "ignoring the saved state" in caplog.text and "mem0.state" in caplog.text


def test_disabled_ras_reads_nothing_and_avoids_nothing(tmp_path: Path) -> None:
    loop = fake_loop(parse_policy("ras: {enabled: false}\n"))
    lines = Lines(trace_lines("6.12"))
    f = Failover(lines, Mover({}), HostFS(tmp_path), None)
    f.tick(1.0, loop)
    assert lines.opened == 0 and f.states == {} and loop.avoid == frozenset()


def test_scripted_events_validate_and_parse_back_as_the_kernel_prints_them() -> None:
    from cxltierd.emulate.rasscript import parse_ras_events, trace_line
    from cxltierd.validate import Checker

    c = Checker("s.yaml", lenient=True)
    script = parse_ras_events(
        c,
        [
            {"at": 12, "memdev": "mem0", "event": "general_media"},
            {"at": 5, "memdev": "mem0", "event": "poison", "dpa": 0x40000},
            {"at": 7, "memdev": "mem1", "event": "dram", "corrected": True, "log": "warning"},
            {"at": 9, "memdev": "mem0", "event": "memory_module", "health_status": "MAINTENANCE_NEEDED"},
        ],
    )
    assert [s.at for s in script] == [5, 7, 9, 12]
    got = [events.parse_line(trace_line(s, s.at, 0x370000000 + s.dpa)) for s in script]
    assert all(isinstance(e, events.RasEvent) for e in got)
    kinds = [(e.name, e.kind, e.memdev, e.hpa) for e in got if isinstance(e, events.RasEvent)]
    assert kinds == [
        ("cxl_poison", "poison", "mem0", 0x370040000),
        ("cxl_dram", "corrected", "mem1", 0x370001000),
        ("cxl_memory_module", "health", "mem0", None),
        ("cxl_general_media", "uncorrectable", "mem0", 0x370001000),
    ]
    with pytest.raises(Exception, match=r"s.yaml: ras_events\[0\].event"):
        parse_ras_events(c, [{"at": 1, "memdev": "mem0", "event": "fire"}])


def test_doctor_says_whether_cxl_errors_can_be_read(tmp_path: Path) -> None:
    from cxltierd.report.ras import ras_checks

    (tmp_path / "sys/bus/cxl/devices").mkdir(parents=True)
    fs = HostFS(tmp_path)
    assert [c.status for c in ras_checks(tracefs.probe(fs))] == ["ok"]  # no memdev: nothing to watch
    (tmp_path / "sys/bus/cxl/devices/mem0").mkdir()
    (tmp_path / "sys/bus/cxl/devices/mem0/trigger_poison_list").write_text("")
    (only,) = ras_checks(tracefs.probe(fs))
    assert only.status == "warn" and "tracefs is not mounted" in only.message and "mount -t tracefs" in only.fix
    tracing_tree(tmp_path)
    checks = ras_checks(tracefs.probe(fs))
    assert [c.status for c in checks] == ["ok", "warn"]
    assert "2 cxl trace events" in checks[0].message and "poison lists: mem0" in checks[0].message
    assert "instance exists" in checks[0].message  # tracing_tree made it, as a running daemon would
    assert (
        "NOT read through the mailbox" in checks[1].message
        and "mem0: no char device /dev/cxl/mem0" in checks[1].message
    )


def test_operator_drain_and_undrain(tmp_path: Path) -> None:
    policy = parse_policy("ras: {poison_poll: 1h}\n")
    loop = fake_loop(policy)
    mover = Mover({"100": 8 * MiB})
    f = Failover(Lines([]), mover, HostFS(tmp_path), tmp_path / "ras.json")
    f.request("drain", 4)
    f.tick(10.0, loop)
    assert loop.avoid == {4} and f.drains[4].status == "done" and mover.on_node["100"] == 0
    assert json.loads((tmp_path / "ras.json").read_text())["manual"] == [4]
    f.observe(events.parse_lines(trace_lines("6.12"))[0], 11.0, policy.ras)
    assert f.states["mem0"].state == "failing"
    f.request("undrain", 4)
    f.tick(12.0, loop)
    assert f.states["mem0"].state == "healthy" and "operator undrain" in f.states["mem0"].cause
    assert loop.avoid == frozenset() and f.drains == {} and f.manual == set()
