"""Live RAS: CXL errors read each tick -> health per memdev and node -> placement kept off unhealthy nodes -> the
drain of failing ones. The pure model is cxltierd.ras; this module feeds it and carries out what it decides.

Each tick (`Failover.tick(now, loop)`, `now` on the wall clock so a restart continues the same timeline):
- the new cxl trace lines (cxltierd's tracefs instance, or the emulated host's scripted pipe) update every memdev's
  health (ras.health), and the poison lists are asked for every `ras.poison_poll`;
- every `ras.health_poll` each memdev's Get Health Info is read through the CXL mailbox (a HealthReader) and fed to
  the health model like a memory-module event; a memdev whose mailbox will not answer is said so once (log, status);
- a node backed by a degraded or failing memdev (ras.nodes) goes into `loop.avoid`: the loop plans no move into it
  and a kernel-executed engine stops demoting while a slow node is avoided;
- a failing node is drained: one ras.drain step per tick, carried out by a Mover (migrate_pages(2) per process on a
  host, the loop's migrator region by region on the emulated host); when the node is empty its memory blocks are
  offlined if the policy says so. Poisoned pages are soft-offlined by HPA where the policy says so.
The health states and drains are saved to a JSON file after each change and read back at start, so neither a
reload (the Failover outlives it) nor a restart loses them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cxltierd.discovery import tracefs
from cxltierd.engines import syscalls
from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.facts import HostFacts
from cxltierd.hostfs import HostFS
from cxltierd.loop import Loop
from cxltierd.model import Move, Plan
from cxltierd.ras import drain, events, health, mailbox, nodes, store
from cxltierd.ras.drain import DrainMove, DrainProgress, Resident, Target
from cxltierd.ras.health import FAILING, HEALTHY, MemdevHealth
from cxltierd.ras.policy import RasPolicy

log = logging.getLogger("cxltierd")

SEVERITIES = ("Informational", "Warning", "Failure", "Fatal")
STATE_FILE = "ras.json"
KEEP_TRANSITIONS = 20
HEALTH_INFO = "get_health_info"  # the name of a mailbox health read, as an event of the health model


class Lines(Protocol):
    """A source of cxl trace lines: the tracefs instance on a host, the scripted pipe on the emulated host."""

    def open(self) -> None:
        """Start reading; raises CxltierdError saying why it cannot."""
        ...

    def read(self) -> list[str]:
        """The lines since the last read."""
        ...

    def close(self) -> None:
        """Stop reading and remove what open() made."""
        ...


# memdev -> its Get Health Info fields (cxltierd.ras.mailbox.parse_health_info); raises CxltierdError saying why not
HealthReader = Callable[[str], dict[str, int | str]]
MAILBOX_OK = "ok"


class Mover(Protocol):
    """What sits on a node, and how a drain step's moves are carried out."""

    granularity: int  # a resident moves in multiples of this (whole when it is larger than the resident)

    def residents(self, node: int, loop: Loop) -> list[Resident]:
        """What is on `node` now."""
        ...

    def move(self, moves: tuple[DrainMove, ...], loop: Loop) -> tuple[int, list[str]]:
        """Carry out the moves; the bytes that moved and one line per failure."""
        ...


class ProcessMover:
    """A host's drain: each process's pages on the node (numa_maps) move with one migrate_pages(2) call, so a
    process moves whole (the rate limit counts it whole)."""

    granularity = syscalls.PAGE_SIZE

    def __init__(self, fs: HostFS, migrate: Any = syscalls.migrate_pages) -> None:
        self.fs = fs
        self.migrate = migrate

    def residents(self, node: int, loop: Loop) -> list[Resident]:
        """Each process holding pages on `node`, with those bytes."""
        own = os.getpid()
        return [Resident(str(pid), size) for pid, size in tracefs.processes_on(self.fs, node).items() if pid != own]

    def move(self, moves: tuple[DrainMove, ...], loop: Loop) -> tuple[int, list[str]]:
        """migrate_pages(pid, src -> the target given most of its bytes) per process."""
        by_pid: dict[str, list[DrainMove]] = {}
        for m in moves:
            by_pid.setdefault(m.key, []).append(m)
        moved, errors = 0, []
        for key, ms in by_pid.items():
            main = max(ms, key=lambda m: m.size)
            try:
                left = self.migrate(int(key), main.src, main.dst)
            except CxltierdError as e:
                errors.append(f"drain of node {main.src}: {e}")
                continue
            moved += max(0, sum(m.size for m in ms) - left * syscalls.PAGE_SIZE)
            if left:
                errors.append(f"drain of node {main.src}: pid {key}: {left} pages could not move")
        return moved, errors


class RegionMover:
    """The emulated host's drain: the loop's regions on the node, moved whole by the loop's migrator."""

    granularity = syscalls.PAGE_SIZE  # the largest region: a region moves whole

    def residents(self, node: int, loop: Loop) -> list[Resident]:
        """The regions of the loop's last sample that sit on `node`, with their heat."""
        out = [Resident(f"{r.pid}:{r.start}", r.size, r.accesses) for r in loop.regions if r.node == node]
        self.granularity = max((r.size for r in out), default=syscalls.PAGE_SIZE)
        return out

    def move(self, moves: tuple[DrainMove, ...], loop: Loop) -> tuple[int, list[str]]:
        """One plan of region moves through the loop's migrator."""
        plan = []
        for m in moves:
            pid, start = m.key.split(":")
            plan.append(Move(int(pid), int(start), m.size, m.src, m.dst, f"drain: node {m.src} failing"))
        now = loop.last.now if loop.last else 0.0
        out = loop.engines.migrator.apply(Plan(moves=tuple(plan)), now)
        return sum(t.bytes for t in out.transfers), list(out.errors)


@dataclass(frozen=True)
class RasView:
    """What metrics, `status` and `doctor` show of RAS: a copy, read by other threads."""

    enabled: bool = False
    source: str = ""  # where the events come from
    problem: str | None = None  # why events cannot be read
    memdevs: dict[str, MemdevHealth] = field(default_factory=dict)
    nodes: dict[int, str] = field(default_factory=dict)  # node -> health state
    events: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (memdev, event, severity) -> count
    figures: dict[str, dict[str, int]] = field(default_factory=dict)  # memdev -> last memory-module health figures
    drains: dict[int, DrainProgress] = field(default_factory=dict)
    avoid: tuple[int, ...] = ()
    offlined: tuple[int, ...] = ()  # nodes whose blocks were offlined after their drain
    soft_offlined: int = 0  # pages soft-offlined for poison
    mailbox: dict[str, str] = field(default_factory=dict)  # memdev -> "ok" or why Get Health Info is not read
    parse_errors: int = 0
    transitions: tuple[str, ...] = ()  # the latest, oldest first


def memdev_nodes(facts: HostFacts | None) -> dict[str, set[int]]:
    """Map memdev -> the NUMA nodes its regions are onlined as (an interleaved region's node has several memdevs)."""
    out: dict[str, set[int]] = {}
    if facts is None:
        return out
    for r in facts.regions:
        node = facts.region_node(r.region)
        if node is None:
            continue
        for m in r.mappings:
            if m.memdev:
                out.setdefault(m.memdev, set()).add(node)
    return out


def label_of(event: events.RasEvent) -> tuple[str, str, str]:
    """The bounded metric labels of an event: memdev, event name (known names only), severity."""
    name = event.name if event.name in events.EVENT_NAMES else "other"
    severity = event.log if event.log in SEVERITIES else ("none" if event.log is None else "other")
    return (event.memdev or "unknown", name, severity)


class Failover:
    """The RAS state of one daemon: health per memdev, drains in progress, and the source of events."""

    def __init__(
        self, lines: Lines | None, mover: Mover, fs: HostFS, state_file: Path | None, health: HealthReader | None = None
    ) -> None:
        self.lines = lines
        self.health_reader = health
        self.mailbox: dict[str, str] = {}  # memdev -> MAILBOX_OK or why its Get Health Info is not read
        self.last_health: float | None = None
        self.mover = mover
        self.fs = fs
        self.state_file = state_file
        self.open = False
        self.problem: str | None = None
        self.states: dict[str, MemdevHealth] = {}
        self.drains: dict[int, DrainProgress] = {}
        self.offlined: set[int] = set()
        self.soft_offlined: set[int] = set()  # HPAs
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.figures: dict[str, dict[str, int]] = {}
        self.parse_errors = 0
        self.transitions: deque[str] = deque(maxlen=KEEP_TRANSITIONS)
        self.last_poll: float | None = None
        self.saved = ""
        self.enabled = False
        self.node_state: dict[int, str] = {}
        self.manual: set[int] = set()  # nodes the operator asked to drain
        self.requests: list[tuple[str, int]] = []  # ("drain" | "undrain", node) from the control socket's threads
        self.lock = threading.Lock()
        self.load()

    # ---- start, stop, persistence ------------------------------------------------------------------------------
    def start(self, policy: RasPolicy) -> None:
        """Open the event source when the policy enables RAS (a failure is kept as `problem`, never raised)."""
        self.enabled = policy.enabled
        if not policy.enabled or self.lines is None or self.open:
            if self.lines is None:
                self.problem = "no source of cxl trace events on this backend"
            return
        try:
            self.lines.open()
        except CxltierdError as e:
            self.problem = str(e)
            log.warning("RAS: cannot read cxl trace events: %s", e)
            return
        self.open, self.problem = True, None
        log.info("RAS: reading cxl trace events from %s", getattr(self.lines, "path", None) or "the event source")

    def close(self) -> None:
        """Close the event source (the tracefs instance is removed); the state stays saved."""
        if self.lines is not None and self.open:
            self.open = False
            try:
                self.lines.close()
            except CxltierdError as e:
                log.error("RAS: closing the trace instance: %s", e)

    def load(self) -> None:
        """Read the saved state; a missing file is a fresh start, a broken one is logged and ignored."""
        if self.state_file is None or not self.state_file.exists():
            return
        source = str(self.state_file)
        try:
            doc = json.loads(self.state_file.read_text())
            if not isinstance(doc, dict):
                raise CxltierdError(f"{source}: not a JSON object")
            self.states = store.load(doc.get("memdevs"), source)
            self.drains = {
                int(k): DrainProgress.from_dict(v, f"{source}: drains.{k}")
                for k, v in (doc.get("drains") or {}).items()
            }
            self.offlined = {int(n) for n in doc.get("offlined") or []}
            self.soft_offlined = {int(a) for a in doc.get("soft_offlined") or []}
            self.manual = {int(n) for n in doc.get("manual") or []}
        except (OSError, ValueError, TypeError, CxltierdError) as e:
            log.error("RAS: ignoring the saved state %s: %s", source, str(e).splitlines()[0] if str(e) else e)
            return
        if self.states or self.drains:
            log.info("RAS: resumed %d memdev states and %d drains from %s", len(self.states), len(self.drains), source)

    def save(self) -> None:
        """Write the state when it changed (atomically: a crash leaves the old file or the new one)."""
        if self.state_file is None or not (self.saved or self.states or self.drains or self.state_file.exists()):
            return
        doc = {
            "memdevs": store.dump(self.states),
            "drains": {str(n): p.to_dict() for n, p in sorted(self.drains.items())},
            "offlined": sorted(self.offlined),
            "soft_offlined": sorted(self.soft_offlined),
            "manual": sorted(self.manual),
        }
        text = json.dumps(doc, indent=1, sort_keys=True)
        if text == self.saved:
            return
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.state_file)
            self.saved = text
        except OSError as e:
            log.error("RAS: cannot save %s: %s", self.state_file, e.strerror or e)

    # ---- the tick ----------------------------------------------------------------------------------------------
    def tick(self, now: float, loop: Loop, health_known: Callable[[], None] = lambda: None) -> None:
        """Read the new events, update health, set loop.avoid, call `health_known` (the daemon publishes the new
        states there, before a drain step that may take seconds), and take one drain step per failing node."""
        policy = loop.policy.ras
        if policy.enabled and not self.open and self.problem is None:
            self.start(policy)
        self.enabled = policy.enabled
        if not policy.enabled:
            loop.avoid = frozenset()
            return
        self.observe(self.read(), now, policy)
        self.poll_health(now, policy)
        self.operator(now, loop)
        self.poll_poison(now, policy)
        self.update_nodes(now, loop)
        health_known()
        for node in sorted(self.drains):
            self.drain_step(node, now, loop)
        self.save()

    def read(self) -> list[events.RasEvent]:
        """The events that arrived since the last tick (unreadable lines counted and logged, never fatal)."""
        if self.lines is None or not self.open:
            return []
        try:
            lines = self.lines.read()
        except CxltierdError as e:
            log.warning("RAS: reading cxl trace events: %s", e)
            return []
        got, errors = events.parse_lines(lines)
        self.parse_errors += len(errors)
        for err in errors[:3]:
            log.warning("RAS: %s", err)
        return got

    def observe(self, got: Iterable[events.RasEvent], now: float, policy: RasPolicy) -> None:
        """Count the events and move each memdev's health; every transition is logged with its cause."""
        got = list(got)
        for e in got:
            self.counts[label_of(e)] += 1
            if e.kind == "health":
                self.figures[e.memdev or "unknown"] = {k: v for k, v in e.health.items() if isinstance(v, int)}
            log.info("RAS: %s on %s (%s)%s", e.name, e.memdev, e.log or "-", f" hpa {e.hpa:#x}" if e.hpa else "")
            if e.kind == "poison" and e.hpa is not None and policy.soft_offline_poison:
                self.soft_offline(e.hpa)
        states, moved = health.observe_all(self.states, got, now, policy)
        for name, h in list(states.items()):
            states[name], t = health.settle(h, now, policy)
            moved += [t] if t is not None else []
        self.states = states
        for t in moved:
            self.record(t)

    def record(self, t: health.Transition) -> None:
        """Log a transition and keep it among the latest."""
        log.warning("RAS: %s", t)
        self.transitions.append(f"{t.time:.0f} {t}")

    def poll_health(self, now: float, policy: RasPolicy) -> None:
        """Every policy.health_poll seconds, each memdev's Get Health Info through the mailbox into the health model;
        a memdev whose mailbox will not answer is logged once per reason (status shows it while it lasts)."""
        if self.health_reader is None or (self.last_health is not None and now - self.last_health < policy.health_poll):
            return
        self.last_health = now
        for name in (n for n in self.fs.listdir(tracefs.CXL_DEVICES) if n.startswith("mem")):
            try:
                fields = self.health_reader(name)
            except CxltierdError as e:
                if self.mailbox.get(name) != str(e):
                    log.warning("RAS: device health of %s is not read through the mailbox: %s", name, e)
                self.mailbox[name] = str(e)
                continue
            if self.mailbox.get(name) != MAILBOX_OK:
                log.info("RAS: %s: Get Health Info through the mailbox: %s", name, mailbox.describe(fields))
            self.mailbox[name] = MAILBOX_OK
            self.figures[name] = {k: v for k, v in fields.items() if isinstance(v, int)}
            event = events.RasEvent(HEALTH_INFO, now, name, "health", health=fields)
            self.states[name], t = health.observe(self.states.get(name) or MemdevHealth(name), event, now, policy)
            if t is not None:
                self.record(t)

    def request(self, action: str, node: int) -> None:
        """An operator's `drain NODE` or `undrain NODE` (any thread); carried out at the next tick."""
        with self.lock:
            self.requests.append((action, node))

    def operator(self, now: float, loop: Loop) -> None:
        """Carry out the operator's requests: drain a node by hand, or undrain it (its memdevs back to healthy)."""
        with self.lock:
            todo, self.requests = self.requests, []
        for action, node in todo:
            if action == "drain":
                self.manual.add(node)
                self.drains.setdefault(node, drain.start(node, now))
                log.warning("RAS: operator: draining node %d", node)
                continue
            self.manual.discard(node)
            self.drains.pop(node, None)
            self.offlined.discard(node)
            for name, nodes_of in memdev_nodes(loop.facts).items():
                if node in nodes_of and name in self.states:
                    self.states[name], t = health.reset(self.states[name], now)
                    if t is not None:
                        self.record(t)
            log.warning("RAS: operator: node %d undrained (offlined memory blocks stay offline)", node)

    def poll_poison(self, now: float, policy: RasPolicy) -> None:
        """Ask every memdev for its poison list every policy.poison_poll seconds."""
        if not self.open or (self.last_poll is not None and now - self.last_poll < policy.poison_poll):
            return
        self.last_poll = now
        names = [n for n in self.fs.listdir(tracefs.CXL_DEVICES) if n.startswith("mem")]
        for why in tracefs.trigger_poison_lists(self.fs, names):
            log.debug("RAS: poison list: %s", why)

    def soft_offline(self, hpa: int) -> None:
        """Soft-offline the page at `hpa` once."""
        page = hpa - hpa % syscalls.PAGE_SIZE
        if page in self.soft_offlined:
            return
        try:
            tracefs.soft_offline(self.fs, page)
        except HostFSError as e:
            log.error("RAS: soft-offline of poisoned page %#x: %s", page, e)
            return
        self.soft_offlined.add(page)
        log.warning("RAS: soft-offlined poisoned page %#x", page)

    def update_nodes(self, now: float, loop: Loop) -> None:
        """Node states from memdev states; unhealthy nodes avoided, failing ones drained."""
        by_node = nodes.node_states(self.states, memdev_nodes(loop.facts))
        states = {n: h.state for n, h in by_node.items()}
        for n, state in states.items():
            if state != self.node_state.get(n, HEALTHY):
                log.warning("RAS: node %d is %s (%s)", n, state, ", ".join(by_node[n].memdevs))
            if state == FAILING and n not in self.drains:
                self.drains[n] = drain.start(n, now)
                log.warning("RAS: draining node %d", n)
        self.node_state = states
        loop.avoid = frozenset(n for n, s in states.items() if s != HEALTHY) | frozenset(self.drains)

    def drain_step(self, node: int, now: float, loop: Loop) -> None:
        """One step of the drain of `node`: plan within the rate and the targets' room, then move."""
        progress = self.drains[node]
        policy = loop.policy.ras
        if progress.status == "done" and node in self.offlined:
            return
        last = loop.last
        if last is None:
            return
        rank = {n: i for i, t in enumerate(loop.topology.tiers) for n in t.nodes}
        targets = [
            Target(n, rank.get(n, len(rank)), last.available.get(n, free), total)
            for n, (total, free) in last.usage.items()
            if n != node and n not in loop.avoid and n in rank
        ]
        residents = self.mover.residents(node, loop)
        step = drain.plan_step(progress, residents, targets, policy, now, self.mover.granularity)
        if loop.policy.dry_run:
            if step.moves:
                log.warning(
                    "RAS: dry run: the drain of node %d would move %d bytes", node, sum(m.size for m in step.moves)
                )
            return
        moved, errors = self.mover.move(step.moves, loop) if step.moves else (0, [])
        for e in errors[:5]:
            log.warning("RAS: %s", e)
        self.drains[node] = step.progress
        if step.moves or step.progress.status != progress.status:
            log.warning(
                "RAS: drain of node %d: %d bytes moved this step, %d left (%s)",
                node,
                moved,
                step.remaining,
                step.reason,
            )
        if step.progress.status == "done" and policy.offline and node not in self.offlined:
            self.offline(node, loop.facts)

    def offline(self, node: int, facts: HostFacts | None) -> None:
        """Offline the drained node's memory blocks, so the kernel allocates nothing new there."""
        nf = facts.node(node) if facts else None
        blocks = list(nf.blocks) if nf else []
        failed = tracefs.offline_blocks(self.fs, blocks)
        for f in failed[:3]:
            log.error("RAS: offline of node %d: %s", node, f)
        if not failed:
            self.offlined.add(node)
            log.warning("RAS: node %d drained, its %d memory blocks offline", node, len(blocks))

    def view(self) -> RasView:
        """A copy of the state for readers."""
        where = f"tracefs instance {getattr(self.lines, 'path', None) or ''}".strip() if self.open else ""
        return RasView(
            enabled=self.enabled,
            source=where,
            problem=self.problem,
            memdevs=dict(self.states),
            nodes=dict(self.node_state),
            events=dict(self.counts),
            figures={k: dict(v) for k, v in self.figures.items()},
            drains=dict(self.drains),
            avoid=tuple(sorted(set(self.drains) | {n for n, s in self.node_state.items() if s != HEALTHY})),
            offlined=tuple(sorted(self.offlined)),
            soft_offlined=len(self.soft_offlined),
            mailbox=dict(self.mailbox),
            parse_errors=self.parse_errors,
            transitions=tuple(self.transitions),
        )
