"""The daemon: ticks the loop on time, reloads on SIGHUP, follows hotplug, serves metrics and the control socket.

One thread owns the loop; it sleeps in select() on a signal wakeup pipe, the udev monitor and the control
requests' wakeup. Signal handlers only set flags. Reload is parse -> validate -> swap at a tick boundary; a
broken policy leaves the old one in force. Readers (Prometheus scrapes, `status`) only read the latest Snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from cxltierd import __version__
from cxltierd.app import Runtime
from cxltierd.control import ControlServer, Peer
from cxltierd.errors import CxltierdError
from cxltierd.hotplug import Debouncer
from cxltierd.loop import Loop, TickReport
from cxltierd.metrics import MetricsServer, registry_for
from cxltierd.notify import Notifier
from cxltierd.render import human_bytes, status_json
from cxltierd.state import TICK_BUCKETS, ReloadResult, Snapshot

log = logging.getLogger("cxltierd")

STOP_WITHIN = 5.0  # seconds: SIGTERM abandons the migration batches left after this


class Clock:
    """Real time: monotonic now(), and wait() sleeps in select() on the given file descriptors."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, timeout: float, fds: list[int]) -> list[int]:
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            return []
        return ready


class FakeClock(Clock):
    """Simulated time for tests and --fake-clock: wait() returns at once, moving time forward."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wait(self, timeout: float, fds: list[int]) -> list[int]:
        ready, _, _ = select.select(fds, [], [], 0)
        if not ready:
            self.t += max(0.0, timeout)
        return ready


@dataclass
class Options:
    listen: tuple[str, int] | None = None
    socket: str | None = None
    once: bool = False
    ticks: int | None = None  # stop after this many ticks


@dataclass
class _Pending:
    """A control-socket reload waiting for the loop thread."""

    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)


class Daemon:
    def __init__(self, rt: Runtime, opts: Options, clock: Clock | None = None, notifier: Notifier | None = None):
        self.rt = rt
        self.opts = opts
        self.clock = clock or Clock()
        self.notify = notifier or Notifier()
        self.loop = Loop(rt.topology, rt.tracker, rt.migrator, rt.policy)
        self.snapshot: Snapshot | None = None
        self.flags: set[str] = set()
        self.pending: list[_Pending] = []
        self.lock = threading.Lock()
        self.debounce = Debouncer()
        self.t0 = self.clock.now()
        self.started = time.time()
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        self.last_reload: ReloadResult | None = None
        self.topology_changes = 0
        self.tick_durations: list[int] = [0] * len(TICK_BUCKETS)
        self.tick_sum = 0.0
        self.last_tick_wall: float | None = None
        self.last_progress = self.clock.now()
        self.last_error: str | None = None
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.metrics: MetricsServer | None = None
        self.control: ControlServer | None = None

    # ---- signals and wakeups ---------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.flags.add("reload" if signum == signal.SIGHUP else "stop")

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"!")

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
        old_fd = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def run(self) -> int:
        restore = self._install_signals()
        try:
            self._start_servers()
            return self._main()
        finally:
            self._shutdown()  # our handlers still installed: a second SIGTERM cannot cut the cleanup short
            restore()

    def _start_servers(self) -> None:
        # Neither is the daemon's job itself: if one cannot open, say so and keep placing memory.
        if self.opts.listen is not None:
            host, port = self.opts.listen
            try:
                self.metrics = MetricsServer(host, port, registry_for(lambda: self.snapshot), self.healthy)
            except OSError as e:
                log.error(
                    "cannot listen on %s:%d for /metrics (%s): running without metrics", host, port, e.strerror or e
                )
            else:
                self.metrics.start()
                log.info("metrics on http://%s:%d/metrics", host, self.metrics.port)
        if self.opts.socket:
            control = ControlServer(self.opts.socket, {"status": self._status, "reload": self._reload_request})
            try:
                control.start()
            except CxltierdError as e:
                log.error("%s: running without a control socket (`cxltierd status` shows a fresh discovery)", e)
            else:
                self.control = control
                log.info("control socket %s", self.opts.socket)

    def _main(self) -> int:
        rt = self.rt
        log.info(
            "backend %s, engine %s (%s), policy %s, interval %gs%s",
            rt.backend,
            rt.engine,
            rt.engine_reason,
            rt.policy.source,
            rt.policy.interval,
            ", dry run" if rt.policy.dry_run else "",
        )
        for c in rt.conflicts:
            log.warning("conflict: %s", c)
        self._tick()
        self.notify.ready(self._status_line())
        if self.opts.once or (self.opts.ticks is not None and self.loop.totals.ticks >= self.opts.ticks):
            return 0
        next_tick = self.clock.now() + self.loop.policy.interval
        wd = self.notify.watchdog_interval
        next_wd = self.clock.now() if wd else None
        fds = [self.wake_r] + ([rt.events.fileno()] if rt.events is not None else [])
        while True:
            now = self.clock.now()
            if next_wd is not None and wd is not None and now >= next_wd:
                self.notify.watchdog()
                next_wd = now + wd
            deadlines = [next_tick] + ([next_wd] if next_wd is not None else [])
            dw = self.debounce.wait(now)
            if dw is not None:
                deadlines.append(now + dw)
            ready = self.clock.wait(min(deadlines) - now, fds)
            now = self.clock.now()
            self.last_progress = now
            if self.wake_r in ready:
                self._drain_wakeups()
            if rt.events is not None and rt.events.fileno() in ready:
                self._take_events(rt.events.drain(), now)
            if "stop" in self.flags:
                log.info("stopping")
                return 0
            if "reload" in self.flags:
                self.flags.discard("reload")
                self.reload()
            self._serve_pending()
            if self.debounce.due(now):
                self._rediscover(self.debounce.take())
            if now >= next_tick:
                self._tick()
                if self.opts.ticks is not None and self.loop.totals.ticks >= self.opts.ticks:
                    return 0
                next_tick = max(next_tick + self.loop.policy.interval, self.clock.now())
                self.notify.status(self._status_line())

    def _shutdown(self) -> None:
        self.notify.stopping()
        for what, stop in (
            ("tracker", self.rt.tracker.stop),
            ("engine", self.rt.migrator.stop),
            ("control socket", self.control.stop if self.control else None),
            ("metrics server", self.metrics.stop if self.metrics else None),
            ("hotplug", self.rt.events.close if self.rt.events else None),
            ("runtime", self.rt.close),
        ):
            if stop is None:
                continue
            try:
                stop()
            except Exception as e:  # stopping must finish whatever one part does
                log.error("stopping %s: %s", what, e)
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)  # not into the pipe closed below (run() restores the previous one)
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # ---- the tick --------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        started = time.monotonic()
        now = self.clock.now() - self.t0
        deadline = started + STOP_WITHIN
        try:
            if self.rt.scripted is not None:
                self._take_events(self.rt.scripted(now), self.clock.now())
            report = self.loop.tick(now, stop=lambda: "stop" in self.flags and time.monotonic() > deadline)
            self.last_error = None
        except CxltierdError as e:
            log.error("tick failed: %s", e)
            self.last_error = str(e)
            report = None
        except Exception as e:  # one bad tick never stops the daemon
            log.exception("tick failed")
            self.last_error = f"{type(e).__name__}: {e}"
            report = None
        duration = time.monotonic() - started
        self.tick_sum += duration
        i = bisect_left(TICK_BUCKETS, duration)
        for j in range(i, len(TICK_BUCKETS)):
            self.tick_durations[j] += 1
        self.last_tick_wall = time.time()
        self.last_progress = self.clock.now()
        if report is not None:
            log.info("%s", self.tick_line(report))
            for note in report.plan.notes[:3]:
                log.debug("  note: %s", note)
            for m in report.plan.moves[:5]:
                log.debug("  %s: pid %d %#x %s", "planned" if report.dry_run else "move", m.pid, m.start, m.reason)
            for err in report.outcome.errors[:5]:
                log.warning("%s", err)
        self._publish()

    def tick_line(self, r: TickReport) -> str:
        per_pair: dict[tuple[str, str], int] = {}
        for tr in r.outcome.transfers:
            pair = (self.loop.tier_name(tr.src), self.loop.tier_name(tr.dst))
            per_pair[pair] = per_pair.get(pair, 0) + tr.bytes
        moves = ", ".join(f"{a}->{b} {human_bytes(v)}" for (a, b), v in sorted(per_pair.items()))
        if r.dry_run:
            planned = sum(m.size for m in r.plan.moves)
            moved = f"dry run: {len(r.plan.moves)} moves planned ({human_bytes(planned)})"
        else:
            moved = f"moved {human_bytes(r.moved_bytes)}" + (f" ({moves})" if moves else "")
        share = "n/a" if r.fast_share is None else f"{100 * r.fast_share:.1f}%"
        usage = []
        for t in self.loop.topology.tiers:
            pairs = [r.usage[n] for n in t.nodes if n in r.usage]
            if pairs:
                total = sum(p[0] for p in pairs)
                used = total - sum(p[1] for p in pairs)
                usage.append(f"{t.name} {human_bytes(used)}/{human_bytes(total)}")
        failed = sum(r.outcome.failures.values())
        return f"tick {self.loop.totals.ticks}: {moved}, fast-tier share {share}, used {', '.join(usage) or 'n/a'}" + (
            f", {failed} pages failed" if failed else ""
        )

    def _status_line(self) -> str:
        s = self.snapshot
        if s is None:
            return "starting"
        share = "" if s.fast_tier_access_ratio is None else f", fast-tier share {100 * s.fast_tier_access_ratio:.0f}%"
        moved = sum(s.migrated_bytes.values())
        return (
            f"{s.engine} engine on {s.backend} host: {len(s.topology.tiers)} tiers, moved {human_bytes(moved)}{share}"
        )

    def _publish(self) -> None:
        rt, loop, last = self.rt, self.loop, self.loop.last
        t = loop.totals
        try:
            counters = rt.kernel_counters()
        except Exception as e:
            counters = {}
            log.debug("kernel counters: %s", e)
        self.snapshot = Snapshot(
            topology=loop.topology,
            version=__version__,
            started=self.started,
            backend=rt.backend,
            engine=rt.engine,
            engine_reason=rt.engine_reason,
            conflicts=tuple(rt.conflicts),
            interval=loop.policy.interval,
            policy_source=loop.policy.source,
            policy_digest=loop.policy.digest,
            dry_run=loop.policy.dry_run,
            last_reload=self.last_reload,
            reloads=dict(self.reloads),
            last_tick=self.last_tick_wall,
            ticks=t.ticks,
            tick_seconds_sum=self.tick_sum,
            tick_bucket_counts=tuple(self.tick_durations),
            usage=dict(last.usage) if last else {},
            migrated_bytes=dict(t.migrated_bytes),
            migrated_pages=dict(t.migrated_pages),
            failures=dict(t.failures),
            ping_pong=t.ping_pong,
            fast_tier_access_ratio=last.fast_share if last else None,
            hot_bytes=dict(last.hot_bytes) if last else {},
            process_bytes=dict(last.process_bytes) if last else {},
            last_moved_bytes=last.moved_bytes if last else 0,
            topology_changes=self.topology_changes,
            kernel_counters=counters,
            memdevs=tuple(rt.memdevs()),
            regions=tuple(rt.regions()),
            last_error=self.last_error,
        )

    # ---- reload ----------------------------------------------------------------------------------------------
    def reload(self) -> ReloadResult:
        """Re-read the policy file; swap it in only if it validates. Runs in the loop thread."""
        self.notify.reloading()
        try:
            policy = self.rt.load_policy()
        except Exception as e:  # not only CxltierdError: no policy file may end the daemon
            error = str(e) if isinstance(e, CxltierdError) else f"{type(e).__name__}: {e}"
            error = (error.splitlines() or [type(e).__name__])[0][:400]
            result = ReloadResult(ok=False, time=time.time(), error=error, source=self.rt.policy_path or "")
            self.reloads["failure"] += 1
            log.error("reload refused, old policy stays in force: %s", error)
        else:
            overrides_changed = policy.tiers.overrides != self.loop.policy.tiers.overrides
            self.rt.policy = policy
            self.loop.set_policy(policy)
            if overrides_changed:
                self._rediscover(["policy tier overrides changed"])
            result = ReloadResult(ok=True, time=time.time(), source=policy.source)
            self.reloads["success"] += 1
            log.info("reloaded policy %s (sha256 %s)", policy.source, policy.digest)
        self.last_reload = result
        self._publish()
        self.notify.ready(self._status_line())
        return result

    def _reload_request(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Control-socket thread: hand the reload to the loop thread and wait for its result."""
        p = _Pending()
        with self.lock:
            self.pending.append(p)
        self._wake()
        if not p.done.wait(10.0):
            return {"ok": False, "error": "daemon did not answer the reload within 10 s"}
        return p.result

    def _serve_pending(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for p in pending:
            r = self.reload()
            p.result = {"ok": r.ok, "error": r.error, "policy": r.source, "digest": self.loop.policy.digest}
            p.done.set()

    def _status(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        snap = self.snapshot
        if snap is None:
            return {"ok": False, "error": "daemon is starting"}
        return {"ok": True, "status": status_json(snap)}

    def healthy(self) -> tuple[bool, str]:
        s = self.snapshot
        if s is None or s.last_tick is None:
            return False, "starting"
        late = time.time() - s.last_tick
        limit = max(3 * s.interval, 30.0)
        if late > limit:
            return False, f"last tick {late:.0f} s ago (limit {limit:.0f} s)"
        return True, f"ok: tick {s.ticks}, {late:.1f} s ago"

    # ---- hotplug ---------------------------------------------------------------------------------------------
    def _take_events(self, events: list[str], now: float) -> None:
        for e in events:
            log.info("hotplug: %s", e)
        self.debounce.add(events, now)

    def _rediscover(self, why: list[str]) -> None:
        old = self.loop.topology
        try:
            topo = self.rt.rediscover()
        except CxltierdError as e:
            log.error("re-discovery after %s failed, keeping the old topology: %s", why[0] if why else "?", e)
            return
        gone = sorted(set(old.node_ids) - set(topo.node_ids))
        new = sorted(set(topo.node_ids) - set(old.node_ids))
        kinds = {n.node: n.kind for n in topo.nodes}
        changed = [n for n in topo.node_ids if n in old.node_ids and old.node(n).kind != kinds[n]]
        if gone or new or changed or old.tiers != topo.tiers:
            self.topology_changes += 1
            parts = [f"node {n} ({old.node(n).kind}) gone" for n in gone]
            parts += [f"node {n} ({kinds[n]}) appeared" for n in new]
            parts += [f"node {n} is now {kinds[n]}" for n in changed]
            log.warning("topology changed after %d event(s): %s", len(why), "; ".join(parts) or "tiers reordered")
            try:
                if self.rt.pick_engine():
                    log.warning("a second memory tier: engine %s (%s)", self.rt.engine, self.rt.engine_reason)
                    self.loop.tracker, self.loop.migrator = self.rt.tracker, self.rt.migrator
                self.loop.set_topology(topo)
            except CxltierdError as e:
                log.error("engine cannot follow the new topology: %s", e)
                self.last_error = str(e)
        else:
            log.info("re-discovery after %d event(s): topology unchanged", len(why))
        self._publish()
