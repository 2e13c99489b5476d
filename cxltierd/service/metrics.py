"""Prometheus exposition: a custom collector over the loop's state snapshot, on a private registry.

Collected per scrape from the current Snapshot (an immutable object swapped in by the loop), so a scrape never
blocks the loop; a family that cannot be built is skipped and counted, never raised. Served with /healthz by a
small threaded HTTP server that bounds what clients can hold: MAX_CONNECTIONS at once (more get a 503), each closed
after CONNECTION_DEADLINE seconds, and accept errors (no file descriptors left) retried after a pause, not spun on.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cxltierd import __version__
from cxltierd.discovery.parse import TIERING_COUNTERS
from cxltierd.model import FAILURE_REASONS
from cxltierd.service.ras import ras_metrics
from cxltierd.service.state import TICK_BUCKETS, Snapshot
from cxltierd.service.tenant_metrics import tenant_families

log = logging.getLogger("cxltierd.service.metrics")

# Every /proc/vmstat tiering counter discovery reads is exported as cxltierd_kernel_<name>_total.
KERNEL_COUNTERS = TIERING_COUNTERS

MAX_CONNECTIONS = 64  # HTTP connections served at once
CONNECTION_TIMEOUT = 5.0  # seconds one read or write of a connection may wait
CONNECTION_DEADLINE = 10.0  # seconds a connection may stay open in all
BACKLOG = 128
ACCEPT_PAUSE = 0.1  # seconds to wait after an accept error before the next try


class SnapshotCollector(Collector):
    """Yields every cxltierd metric from `get()`'s snapshot (nothing but build_info when there is none yet)."""

    def __init__(self, get: Callable[[], Snapshot | None]) -> None:
        self.get = get
        self.errors = 0

    def describe(self) -> Iterator[Metric]:
        """Nothing eagerly: collect() is cheap but needs a snapshot."""
        return iter(())  # collect() is cheap but needs a snapshot: no eager describe

    def collect(self) -> Iterator[Metric]:
        """Every family from the current snapshot; one that cannot be built is skipped and counted."""
        info = InfoMetricFamily("cxltierd_build", "cxltierd version.")
        info.add_metric([], {"version": __version__})
        yield info
        snap = self.get()
        if snap is None:
            return
        for build in (_topology, _cxl, _loop, _policy, _kernel, _daemon, ras_metrics, tenant_families):
            try:
                yield from list(build(snap))
            except Exception as e:  # a scrape never raises
                self.errors += 1
                log.warning("metrics: skipped %s: %s", build.__name__.strip("_"), e)


def _topology(s: Snapshot) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "cxltierd_node_info", "Memory NUMA node and its tier (value 1).", labels=["node", "tier", "kind", "rank"]
    )
    total = GaugeMetricFamily("cxltierd_node_memory_total_bytes", "Memory of a NUMA node.", labels=["node"])
    free = GaugeMetricFamily("cxltierd_node_memory_free_bytes", "Free memory of a NUMA node.", labels=["node"])
    avail = GaugeMetricFamily(
        "cxltierd_node_memory_available_bytes",
        "Memory of a NUMA node the kernel can hand out cheaply (free plus reclaimable cache, less reserves).",
        labels=["node"],
    )
    live = set(s.usage) if s.usage else {n.node for n in s.topology.nodes}
    for n in s.topology.nodes:
        if n.node not in live:
            continue
        tier = s.topology.tier_of(n.node)
        info.add_metric([str(n.node), tier.name, n.kind, str(tier.rank)], 1)
        t, f = s.node_usage(n.node)
        total.add_metric([str(n.node)], t)
        free.add_metric([str(n.node)], f)
        if n.node in s.available:
            avail.add_metric([str(n.node)], s.available[n.node])
    yield from (info, total, free, avail)
    ttotal = GaugeMetricFamily("cxltierd_tier_memory_total_bytes", "Memory of a tier.", labels=["tier"])
    tfree = GaugeMetricFamily("cxltierd_tier_memory_free_bytes", "Free memory of a tier.", labels=["tier"])
    for name, (t, f) in s.tier_usage().items():
        ttotal.add_metric([name], t)
        tfree.add_metric([name], f)
    yield from (ttotal, tfree)
    hot = GaugeMetricFamily("cxltierd_hot_bytes", "Memory judged hot, by the tier it sits on.", labels=["tier"])
    for name, b in sorted(s.hot_bytes.items()):
        hot.add_metric([name], b)
    yield hot
    yield GaugeMetricFamily(
        "cxltierd_heat_regions", "Regions (tracker chunks) with heat at the last tick.", value=s.regions
    )
    yield GaugeMetricFamily(
        "cxltierd_heat_region_bytes",
        "Size of the largest of those regions (the tracker's chunk).",
        value=s.region_bytes,
    )
    if s.process_bytes:  # only when the policy sets metrics.process_labels: pid and comm are unbounded labels
        proc = GaugeMetricFamily(
            "cxltierd_process_memory_bytes", "Managed memory of a process, by tier.", labels=["pid", "comm", "tier"]
        )
        for (pid, comm, tier_name), b in sorted(s.process_bytes.items()):
            proc.add_metric([str(pid), comm, tier_name], b)
        yield proc


def _cxl(s: Snapshot) -> Iterator[Metric]:
    mem = GaugeMetricFamily(
        "cxltierd_cxl_memdev_info",
        "CXL memory device (value 1).",
        labels=["memdev", "serial", "host", "firmware_version"],
    )
    facts = s.facts
    for m in facts.memdevs if facts else ():
        labels = (m.memdev, m.serial, m.host, m.firmware_version)
        mem.add_metric(["" if v is None else str(v) for v in labels], 1)
    info = GaugeMetricFamily(
        "cxltierd_cxl_region_info", "CXL region and the node it feeds (value 1).", labels=["region", "mode", "node"]
    )
    size = GaugeMetricFamily("cxltierd_cxl_region_size_bytes", "Size of a CXL region.", labels=["region"])
    for g in facts.regions if facts else ():
        node = facts.region_node(g.region) if facts else None
        info.add_metric([g.region, g.mode or "", "" if node is None else str(node)], 1)
        size.add_metric([g.region], g.size or 0)
    yield from (mem, info, size)


def _per_pair(
    first: tuple[str, str, Mapping[tuple[str, str], int]], second: tuple[str, str, Mapping[tuple[str, str], int]]
) -> tuple[CounterMetricFamily, CounterMetricFamily]:
    """Two counters by (from_tier, to_tier), the second with a series (0 when absent) for every pair of the first."""
    fams = [CounterMetricFamily(name, doc, labels=["from_tier", "to_tier"]) for name, doc, _ in (first, second)]
    for pair, v in sorted(first[2].items()):
        fams[0].add_metric(list(pair), v)
        fams[1].add_metric(list(pair), second[2].get(pair, 0))
    return fams[0], fams[1]


def _loop(s: Snapshot) -> Iterator[Metric]:
    moved_b, moved_p = _per_pair(
        ("cxltierd_migrated_bytes", "Memory moved by cxltierd.", s.migrated_bytes),
        ("cxltierd_migrated_pages", "Pages moved by cxltierd.", s.migrated_pages),
    )
    fails = CounterMetricFamily("cxltierd_migration_failures", "Pages that did not move, by reason.", labels=["reason"])
    for reason in (*FAILURE_REASONS, *sorted(set(s.failures) - set(FAILURE_REASONS))):  # every reason from the start
        fails.add_metric([reason], s.failures.get(reason, 0))
    yield from (moved_b, moved_p, fails)
    yield CounterMetricFamily(
        "cxltierd_ping_pong_moves", "Regions sent back where they came from within two cooldowns.", value=s.ping_pong
    )
    if s.fast_tier_access_ratio is not None:
        yield GaugeMetricFamily(
            "cxltierd_fast_tier_access_ratio",
            "Share of sampled accesses served by the fast tier.",
            value=s.fast_tier_access_ratio,
        )
    buckets = [(_le(b), c) for b, c in zip(TICK_BUCKETS, s.tick_bucket_counts, strict=False)]
    buckets.append(("+Inf", s.ticks))
    hist = HistogramMetricFamily("cxltierd_loop_duration_seconds", "Duration of one loop tick.")
    hist.add_metric([], buckets, sum_value=s.tick_seconds_sum)
    yield hist
    if s.last_tick is not None:
        yield GaugeMetricFamily(
            "cxltierd_last_tick_timestamp_seconds", "When the last tick finished.", value=s.last_tick
        )
    yield CounterMetricFamily(
        "cxltierd_topology_changes", "Re-discoveries that changed the topology.", value=s.topology_changes
    )
    engine = GaugeMetricFamily("cxltierd_engine_info", "Engine in use (value 1).", labels=["engine", "backend"])
    engine.add_metric([s.engine, s.backend], 1)
    yield engine


def _policy(s: Snapshot) -> Iterator[Metric]:
    reloads = CounterMetricFamily("cxltierd_policy_reloads", "Policy reloads, by result.", labels=["result"])
    for result in ("success", "failure"):
        reloads.add_metric([result], s.reloads.get(result, 0))
    yield reloads
    ok = 1 if s.last_reload is None or s.last_reload.ok else 0
    yield GaugeMetricFamily("cxltierd_policy_last_reload_success", "1 if the last reload was applied.", value=ok)
    yield GaugeMetricFamily("cxltierd_dry_run", "1 when moves are planned but not applied.", value=int(s.dry_run))
    info = InfoMetricFamily("cxltierd_policy", "The policy in force: its file and sha256.")
    info.add_metric([], {"source": s.policy_source, "sha256": s.policy_digest})
    yield info
    if s.policy_loaded is not None:
        yield GaugeMetricFamily(
            "cxltierd_policy_last_reload_success_timestamp_seconds",
            "When the policy in force was loaded: the last good reload, or the start.",
            value=s.policy_loaded,
        )
    yield from _per_pair(
        ("cxltierd_dry_run_planned_bytes", "Memory a dry run planned to move.", s.planned_bytes),
        ("cxltierd_dry_run_planned_moves", "Region moves a dry run planned.", s.planned_moves),
    )


def _kernel(s: Snapshot) -> Iterator[Metric]:
    for name in KERNEL_COUNTERS:
        if name in s.kernel_counters:
            yield CounterMetricFamily(f"cxltierd_kernel_{name}", f"/proc/vmstat {name}.", value=s.kernel_counters[name])


def _daemon(s: Snapshot) -> Iterator[Metric]:
    if s.gates is not None:
        gate = GaugeMetricFamily(
            "cxltierd_kernel_gate", "1 while the kernel-executed engine may move that way.", labels=["direction"]
        )
        gate.add_metric(["promote"], int(s.gates.promote))
        gate.add_metric(["demote"], int(s.gates.demote))
        yield gate
    u = s.self_usage
    if u is None:
        return
    yield CounterMetricFamily(
        "cxltierd_daemon_cpu_seconds", "CPU time the daemon used (user + system).", value=u.cpu_seconds
    )
    yield GaugeMetricFamily("cxltierd_daemon_resident_memory_bytes", "The daemon's resident memory.", value=u.rss_bytes)
    yield GaugeMetricFamily("cxltierd_daemon_threads", "The daemon's threads.", value=u.threads)
    yield GaugeMetricFamily("cxltierd_daemon_open_fds", "The daemon's open file descriptors.", value=u.open_fds)


def _le(bound: float) -> str:
    return repr(float(bound))


def registry_for(get: Callable[[], Snapshot | None]) -> CollectorRegistry:
    """A private registry holding only the snapshot collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(get))
    return registry


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections, an overall deadline per connection and no spin on accept
    errors. The deadline is kept by service_actions(), which serve_forever() calls at least every poll interval."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], handler: Any, deadline: float) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.deadline = deadline
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.open: dict[Any, float] = {}  # connection -> when it is shut down
        self.open_lock = threading.Lock()
        self.failing = False
        self.accept_errors = 0
        self.refused = 0
        super().__init__(address, handler)

    def get_request(self) -> Any:
        try:
            request = super().get_request()
        except OSError as e:
            # The listening socket stays readable while accept() fails (EMFILE): pause instead of spinning.
            self.accept_errors += 1
            if not self.failing:
                log.error("metrics: accept failed (%s): retrying every %g s", e.strerror or e, ACCEPT_PAUSE)
                self.failing = True
            time.sleep(ACCEPT_PAUSE)
            raise
        if self.failing:
            log.info("metrics: accepting again")
            self.failing = False
        return request

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            with contextlib.suppress(OSError):
                request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", socket.MSG_DONTWAIT)
            self.shutdown_request(request)
            return
        with self.open_lock:
            self.open[request] = time.monotonic() + self.deadline
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self.open_lock:
            if self.open.pop(request, None) is not None:
                self.slots.release()

    def service_actions(self) -> None:
        now = time.monotonic()
        with self.open_lock:
            late = [conn for conn, until in self.open.items() if until < now]
        for conn in late:  # its thread's blocked read or write returns at once
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not a traceback: a client that went away mid-reply is routine."""
        e = sys.exc_info()[1]
        who = client_address[0] if client_address else "?"
        if isinstance(e, OSError):
            log.debug("metrics: client %s: %s", who, e)
        else:
            log.warning("metrics: request from %s failed: %s: %s", who, type(e).__name__, e)


class MetricsServer:
    """/metrics (Prometheus text format) and /healthz (200 while the loop ticks on time, else 503)."""

    def __init__(
        self,
        address: str,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        deadline: float = CONNECTION_DEADLINE,
    ) -> None:
        registry_ = registry

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body, code, ctype = generate_latest(registry_), 200, CONTENT_TYPE_LATEST
                    except Exception as e:  # never take the server down
                        body, code, ctype = f"error: {e}\n".encode(), 500, "text/plain"
                elif path == "/healthz":
                    ok, why = healthy()
                    body, code, ctype = (why + "\n").encode(), 200 if ok else 503, "text/plain"
                else:
                    body, code, ctype = b"cxltierd: /metrics, /healthz\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _Server((address, port), Handler, deadline)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.2,), name="metrics", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()


def url_host(address: str) -> str:
    """An address as it appears in a URL: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def parse_listen(text: str) -> tuple[str, int]:
    """ "0.0.0.0:9750", ":9750", "[::1]:9750", "9750" -> (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected [ADDRESS]:PORT")
    return host, int(port)
