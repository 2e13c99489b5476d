"""The daemon: ticks the loop on time, reloads on SIGHUP, follows hotplug, serves metrics and the control socket.

One thread owns the loop; it sleeps in select() on a signal wakeup pipe, the udev monitor and the control
requests' wakeup. Signal handlers only set flags. Reload is parse -> validate -> swap at a tick boundary; a
broken policy leaves the old one in force. Readers (Prometheus scrapes, `status`) only read the latest Snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from cxltierd.app import Runtime
from cxltierd.discovery.hotplug import Debouncer
from cxltierd.errors import CxltierdError, StartError
from cxltierd.loop import Loop
from cxltierd.service import publish
from cxltierd.service.clock import Clock, FakeClock
from cxltierd.service.control import ControlServer, Peer
from cxltierd.service.metrics import MetricsServer, registry_for, url_host
from cxltierd.service.nfd import FeatureFile
from cxltierd.service.notify import Notifier
from cxltierd.service.state import ReloadResult, Snapshot
from cxltierd.service.status import status_json

__all__ = ["Clock", "Daemon", "FakeClock", "Options"]

log = logging.getLogger("cxltierd")

STOP_WITHIN = 5.0  # seconds: SIGTERM abandons the migration batches left after this


@dataclass
class Options:
    """How the daemon runs: metrics address, control socket path, and when to stop (one tick, N ticks, or never)."""

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
    """Runs one Loop on time over a Runtime's wiring; the loop thread is the only one that touches the loop."""

    def __init__(
        self, rt: Runtime, loop: Loop, opts: Options, clock: Clock | None = None, notifier: Notifier | None = None
    ):
        self.rt = rt
        self.loop = loop
        self.opts = opts
        self.clock = clock or Clock()
        self.notify = notifier or Notifier()
        self.svc = publish.ServiceState(backend=rt.backend, started=time.time())
        self.snapshot: Snapshot | None = None
        self.flags: set[str] = set()
        self.pending: list[_Pending] = []
        self.lock = threading.Lock()
        self.debounce = Debouncer()
        self.t0 = self.clock.now()
        self.last_progress = self.clock.now()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.metrics: MetricsServer | None = None
        self.control: ControlServer | None = None
        self.labels = FeatureFile()  # node-feature-discovery labels, when the policy asks

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
        """Tick until SIGTERM/SIGINT or the tick limit, then stop engines and servers; the exit status."""
        restore = self._install_signals()
        try:
            self._start_servers()  # before the engines touch anything: a port taken ends the start here
            self.loop.start()
            return self._main()
        finally:
            self._shutdown()  # our handlers still installed: a second SIGTERM cannot cut the cleanup short
            restore()

    def _start_servers(self) -> None:
        # Metrics asked for and not served would go unnoticed until an alert is missing: that ends the start.
        # The control socket is not the daemon's job itself: if it cannot open, say so and keep placing memory.
        if self.opts.listen is not None:
            host, port = self.opts.listen
            try:
                self.metrics = MetricsServer(host, port, registry_for(lambda: self.snapshot), self.healthy)
            except OSError as e:
                raise StartError(
                    f"--listen {url_host(host)}:{port}: cannot serve /metrics ({e.strerror or e}); "
                    "use another address or --listen off"
                ) from None
            self.metrics.start()
            log.info("metrics on http://%s:%d/metrics", url_host(host), self.metrics.port)
        if self.opts.socket:
            handlers = {"status": self._status, "reload": self._reload_request, **self._ras_handlers()}
            control = ControlServer(self.opts.socket, handlers)
            try:
                control.start()
            except CxltierdError as e:
                log.error("%s: running without a control socket (`cxltierd status` shows a fresh discovery)", e)
            else:
                self.control = control
                log.info("control socket %s", self.opts.socket)

    def _main(self) -> int:
        rt, engines, policy = self.rt, self.loop.engines, self.loop.policy
        log.info(
            "backend %s, engine %s (%s), policy %s, interval %gs%s",
            rt.backend,
            engines.name,
            engines.reason,
            policy.source,
            policy.interval,
            ", dry run" if policy.dry_run else "",
        )
        for c in engines.conflicts:
            log.warning("conflict: %s", c)
        self._tick()
        self.notify.ready(publish.status_line(self.snapshot))
        if self.opts.once or (self.opts.ticks is not None and self.loop.totals.ticks >= self.opts.ticks):
            return 0
        next_tick = self.clock.now() + self.loop.policy.interval
        wd = self.notify.watchdog_interval
        next_wd = self.clock.now() if wd else None
        sources = {s.fileno(): s for s in rt.events}
        fds = [self.wake_r, *sources]
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
            for fd in ready:
                if fd in sources:
                    self._take_events(sources[fd].drain(), now)
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
                self.notify.status(publish.status_line(self.snapshot))

    def _shutdown(self) -> None:
        self.notify.stopping()
        for what, stop in (
            ("engine", self.loop.stop),
            ("control socket", self.control.stop if self.control else None),
            ("metrics server", self.metrics.stop if self.metrics else None),
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
        svc = self.svc
        self._ras_tick()
        try:
            report = self.loop.tick(now, stop=lambda: "stop" in self.flags and time.monotonic() > deadline)
            svc.last_error = None
        except CxltierdError as e:
            log.error("tick failed: %s", e)
            svc.last_error = str(e)
            report = None
        except Exception as e:  # one bad tick never stops the daemon
            log.exception("tick failed")
            svc.last_error = f"{type(e).__name__}: {e}"
            report = None
        svc.times.add(time.monotonic() - started)
        svc.last_tick_wall = time.time()
        self.last_progress = self.clock.now()
        if report is not None:
            svc.record_plan(self.loop.tier_name, report)
        self._publish()  # before the tick line: once the journal shows "tick N", status answers with it
        if report is not None:
            log.info("%s", publish.tick_line(self.loop, report))
            for note in report.plan.notes[:3]:
                log.debug("  note: %s", note)
            for m in report.plan.moves[:5]:
                log.debug("  %s: pid %d %#x %s", "planned" if report.dry_run else "move", m.pid, m.start, m.reason)
            for err in report.outcome.errors[:5]:
                log.warning("%s", err)

    def _ras_handlers(self) -> dict[str, Any]:
        """Control-socket `drain` / `undrain` {"node": N}: queued for the loop thread's next tick."""
        ras = self.rt.ras
        if ras is None:
            return {}

        def handler(action: str) -> Any:
            def handle(request: dict[str, Any], peer: Peer) -> dict[str, Any]:
                node = request.get("node")
                if not isinstance(node, int) or isinstance(node, bool) or not 0 <= node <= 4095:
                    return {"ok": False, "error": f"{action}: node must be a node number, got {node!r}"}
                ras.request(action, node)
                return {"ok": True, "node": node, "note": f"{action} of node {node} applies at the next tick"}

            return handle

        return {"drain": handler("drain"), "undrain": handler("undrain")}

    def _ras_tick(self) -> None:
        """RAS before placement: new events, health, the nodes to keep off, a drain step. Never stops the tick."""
        if self.rt.ras is None:
            return
        try:
            # wall time at start plus the clock's progress: real time on a host, simulated time under FakeClock
            self.rt.ras.tick(self.svc.started + self.clock.now() - self.t0, self.loop, self._publish_health)
        except Exception as e:
            log.exception("RAS tick failed")
            self.svc.last_error = f"RAS: {type(e).__name__}: {e}"

    def _publish_health(self) -> None:
        """The RAS part of status and metrics, now: a node found failing shows before its drain step, not after
        the whole tick."""
        if self.snapshot is not None and self.rt.ras is not None:
            self.snapshot = replace(self.snapshot, ras=self.rt.ras.view())

    def _publish(self) -> None:
        try:
            counters = self.rt.kernel_counters()
        except Exception as e:
            counters = {}
            log.debug("kernel counters: %s", e)
        try:
            numa = self.rt.tenant_memory(self.loop.policy)
        except Exception as e:
            numa = {}
            log.debug("tenant memory: %s", e)
        snap = publish.snapshot(self.loop, self.svc, counters, publish.self_usage(), numa)
        self.snapshot = replace(snap, ras=self.rt.ras.view()) if self.rt.ras is not None else snap
        self.labels.update(self.loop.policy.node_labels.feature_file, self.snapshot)

    # ---- reload ----------------------------------------------------------------------------------------------
    def reload(self) -> ReloadResult:
        """Re-read the policy file; swap it in only if it validates. Runs in the loop thread."""
        self.notify.reloading()
        try:
            policy = self.rt.load_policy()
        except Exception as e:  # not only CxltierdError: no policy file may end the daemon
            error = str(e) if isinstance(e, CxltierdError) else f"{type(e).__name__}: {e}"
            error = (error.splitlines() or [type(e).__name__])[0][:400]
            return self._reload_done(
                ReloadResult(ok=False, time=time.time(), error=error, source=self.rt.policy_path or "")
            )
        else:
            overrides_changed = policy.tiers.overrides != self.loop.policy.tiers.overrides
            try:
                self.loop.swap(policy=policy)
            except CxltierdError as e:
                return self._reload_done(ReloadResult(ok=False, time=time.time(), error=str(e), source=policy.source))
            if overrides_changed:
                self._rediscover(["policy tier overrides changed"])
            result = ReloadResult(ok=True, time=time.time(), source=policy.source)
            log.info("reloaded policy %s (sha256 %s)", policy.source, policy.digest)
        return self._reload_done(result)

    def _reload_done(self, result: ReloadResult) -> ReloadResult:
        self.svc.record_reload(result)
        if not result.ok:
            log.error("reload refused, old policy stays in force: %s", result.error)
        self._publish()
        self.notify.ready(publish.status_line(self.snapshot))
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
        """(healthy, reason) for /healthz: false while starting or once the last tick is max(3 intervals, 30 s) old."""
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
        """Discover again after hotplug; swap the new topology (and a real engine for the idle one) into the loop."""
        rt, loop = self.rt, self.loop
        old = loop.topology
        try:
            facts = rt.discover()
            topo = rt.classify(facts, loop.policy)
        except CxltierdError as e:
            log.error("re-discovery after %s failed, keeping the old topology: %s", why[0] if why else "?", e)
            return
        gone = sorted(set(old.node_ids) - set(topo.node_ids))
        new = sorted(set(topo.node_ids) - set(old.node_ids))
        kinds = {n.node: n.kind for n in topo.nodes}
        changed = [n for n in topo.node_ids if n in old.node_ids and old.node(n).kind != kinds[n]]
        if not (gone or new or changed or old.tiers != topo.tiers):
            log.info("re-discovery after %d event(s): topology unchanged", len(why))
            loop.swap(facts=facts)
            self._publish()
            return
        self.svc.topology_changes += 1
        parts = [f"node {n} ({old.node(n).kind}) gone" for n in gone]
        parts += [f"node {n} ({kinds[n]}) appeared" for n in new]
        parts += [f"node {n} is now {kinds[n]}" for n in changed]
        log.warning("topology changed after %d event(s): %s", len(why), "; ".join(parts) or "tiers reordered")
        try:
            engines = None
            if loop.engines.name == "none" and len(topo.tiers) > 1:
                engines = rt.engines_for(facts, topo, loop.policy)
                log.warning("a second memory tier: engine %s (%s)", engines.name, engines.reason)
            loop.swap(facts=facts, topology=topo, engines=engines)
        except CxltierdError as e:
            # The new topology is the truth: keep it, and place nothing until the next change brings an engine back.
            log.error("engine %s cannot follow the new topology (%s): idle until the next change", loop.engines.name, e)
            self.svc.last_error = str(e)
            loop.swap(facts=facts, topology=topo, engines=rt.idle(topo, loop.policy, f"engine cannot follow: {e}"))
        self._publish()
