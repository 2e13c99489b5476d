"""The drain planner: which bytes leave a failing node in one step, and where they go. Pure; time passed in.

Each step the caller gives what still sits on the failing node (Resident: a region or process share with its heat)
and the other nodes it may fill (Target: tier rank, free and total bytes). The step moves at most
rate * elapsed bytes (elapsed since the last step, at most max_step; the first step counts as max_step), hottest
first, each to the fastest tier with room, then the next; a target is never filled beyond its free bytes minus the
reserve, so the host does not run out of memory: when the room is gone the drain stalls and reports the bytes left.
DrainProgress is the state kept between steps; to_dict/from_dict make it JSON so a restart resumes the drain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cxltierd.ras.policy import RasPolicy
from cxltierd.validate import Checker, join, show

STATUSES: tuple[str, ...] = ("running", "stalled", "done")
PAGE = 4096


@dataclass(frozen=True)
class Resident:
    """Bytes on the failing node that can move together (a region, a process's share); `key` is the caller's."""

    key: str
    size: int
    heat: float = 0.0  # accesses per second: the hottest move first


@dataclass(frozen=True)
class Target:
    """A node the drain may fill. rank 0 is the fastest tier."""

    node: int
    rank: int
    free: int
    total: int


@dataclass(frozen=True)
class DrainMove:
    """Move `size` bytes of resident `key` from node `src` to node `dst`."""

    key: str
    src: int
    dst: int
    size: int


@dataclass(frozen=True)
class DrainProgress:
    """A drain of `node` in progress: the bytes planned so far (in all, and per target node). A planned move that
    fails stays on the node, so the next step's residents include it again; `remaining` is always what is left."""

    node: int
    started: float
    last_step: float | None = None
    moved: int = 0
    moved_to: dict[int, int] = field(default_factory=dict, hash=False)
    remaining: int | None = None  # bytes left on the node after the last step; None before the first
    status: str = "running"  # one of STATUSES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (node keys as strings)."""
        return {
            "node": self.node,
            "started": self.started,
            "last_step": self.last_step,
            "moved": self.moved,
            "moved_to": {str(k): v for k, v in sorted(self.moved_to.items())},
            "remaining": self.remaining,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str) -> DrainProgress:
        """Read back to_dict's form; a broken one raises ConfigError "SOURCE: key: what"."""
        c = Checker(source)
        keys = ("node", "started", "last_step", "moved", "moved_to", "remaining", "status")
        d = c.mapping(doc, "", keys, required=("node", "started"))
        raw = d.get("moved_to") or {}
        if not isinstance(raw, Mapping):
            c.fail("moved_to", f"must be a mapping, got {show(raw)}")
        for k in raw:
            if not (isinstance(k, str) and k.isdigit()):
                c.fail(join("moved_to", str(k)), f"must be a node number, got {show(k)}")
        last = d.get("last_step")
        return cls(
            node=c.integer(d, "node", "", lo=0, hi=4095),
            started=c.number(d, "started", ""),
            last_step=None if last is None else c.number(d, "last_step", ""),
            moved=c.integer(d, "moved", "", 0, lo=0),
            moved_to={int(k): c.integer(raw, k, "moved_to", lo=0) for k in raw},
            remaining=None if d.get("remaining") is None else c.integer(d, "remaining", "", lo=0),
            status=c.choice(d, "status", "", STATUSES, "running"),
        )


@dataclass(frozen=True)
class DrainStep:
    """One step's moves, the progress after it, and why it stopped where it did."""

    moves: tuple[DrainMove, ...]
    progress: DrainProgress
    remaining: int  # bytes still on the node once the moves are done
    reason: str  # "done", "rate limit", or "no room: N bytes left on node X"


def start(node: int, now: float) -> DrainProgress:
    """A drain of `node` beginning at `now`."""
    return DrainProgress(node=node, started=now)


def room(target: Target, policy: RasPolicy) -> int:
    """Bytes the drain may put on `target`: its free bytes minus the reserve, never below zero."""
    return max(0, target.free - policy.reserve(target.total))


def budget(progress: DrainProgress, now: float, policy: RasPolicy) -> int:
    """Bytes this step may move: rate * elapsed, elapsed capped at max_step (and max_step on the first step)."""
    elapsed = policy.max_step if progress.last_step is None else max(0.0, now - progress.last_step)
    return int(policy.drain_rate * min(elapsed, policy.max_step))


def plan_step(
    progress: DrainProgress,
    residents: Iterable[Resident],
    targets: Iterable[Target],
    policy: RasPolicy,
    now: float,
    granularity: int = PAGE,
) -> DrainStep:
    """The moves of one step at `now`: hottest residents first, fastest target with room first, within budget.

    `residents` is what is on the failing node now; `targets` are the nodes it may fill (the caller leaves out nodes
    that are not healthy; the failing node itself is skipped).

    A resident split across targets or cut by the budget moves in whole multiples of `granularity`.
    """
    left = {t.node: room(t, policy) for t in targets if t.node != progress.node}
    order = sorted((t for t in targets if t.node in left), key=lambda t: (t.rank, t.node))
    todo = sorted((r for r in residents if r.size > 0), key=lambda r: (-r.heat, r.key))
    allowance = budget(progress, now, policy)
    moves: list[DrainMove] = []
    remaining = sum(r.size for r in todo)
    for r in todo:
        size = r.size
        for t in order:
            take = min(size, left[t.node], allowance)
            if take < size:
                take -= take % granularity
            if take <= 0:
                continue
            moves.append(DrainMove(r.key, progress.node, t.node, take))
            size, left[t.node], allowance, remaining = (
                size - take,
                left[t.node] - take,
                allowance - take,
                remaining - take,
            )
            if size == 0:
                break
        if allowance < granularity and remaining > 0:
            break
    moved_to = dict(progress.moved_to)
    for m in moves:
        moved_to[m.dst] = moved_to.get(m.dst, 0) + m.size
    if remaining == 0:
        status, reason = "done", "done"
    elif allowance >= granularity:
        status, reason = "stalled", f"no room: {remaining} bytes left on node {progress.node}"
    else:
        status, reason = "running", "rate limit"
    moved = sum(m.size for m in moves)
    after = DrainProgress(progress.node, progress.started, now, progress.moved + moved, moved_to, remaining, status)
    return DrainStep(tuple(moves), after, remaining, reason)
