"""The policy file: YAML -> validated, typed, immutable Policy. Pure except for load_policy's one file read.

Every key is documented in packaging/policy.yaml (installed as /etc/cxltierd/policy.yaml).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cxltierd.model import PAGE_SIZE
from cxltierd.policy.tenants import Tenant, parse_tenants
from cxltierd.ras.policy import RasPolicy
from cxltierd.topology import TIER_KINDS
from cxltierd.validate import Checker, join, node_id, one_line_errors, parse_yaml, read_config, show

DEFAULT_PATH = "/etc/cxltierd/policy.yaml"
ENGINES: tuple[str, ...] = ("auto", "simulated", "move_pages", "damos", "numa_balancing")
OBJECTIVES: tuple[str, ...] = ("pack", "latency")
MiB = 1 << 20
MAX_KDAMONDS = 64  # damon.max_processes at most: each is a kernel thread sampling its process
MATCH_CHARS = 512  # a regex selector sees this much of a command line (bounds its worst case, see regex_risk)


@dataclass(frozen=True)
class Selector:
    """Matches a process when every given field matches (an empty selector matches nothing)."""

    pid: int | None = None
    name: str | None = None  # comm / executable base name, exact
    regex: str | None = None  # searched in the command line's first MATCH_CHARS characters
    cgroup: str | None = None  # cgroup v2 path prefix ("/ai.slice")

    def matches(self, pid: int, name: str, cmdline: str, cgroup: str) -> bool:
        """Whether a process with this pid, name, command line and cgroup matches every field the selector sets."""
        if self.pid is None and self.name is None and self.regex is None and self.cgroup is None:
            return False
        return (
            (self.pid is None or self.pid == pid)
            and (self.name is None or self.name == name)
            and (self.regex is None or _search(self.regex, (cmdline or name)[:MATCH_CHARS]))
            and (self.cgroup is None or _cgroup_under(cgroup, self.cgroup))
        )


@functools.lru_cache(maxsize=4096)
def _search(regex: str, text: str) -> bool:
    """re.search, remembered: a process's command line is searched once, not on every tick."""
    return re.search(regex, text) is not None


def _cgroup_under(cgroup: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or cgroup == prefix or cgroup.startswith(prefix + "/")


@dataclass(frozen=True)
class Pin:
    """Memory of matching processes lives on `tier` and is never moved elsewhere."""

    match: Selector
    tier: str


@dataclass(frozen=True)
class Processes:
    """Which processes the loop manages, leaves alone, or pins to a tier."""

    manage: tuple[Selector, ...] = ()  # empty: every process (above min_rss on a real host)
    exclude: tuple[Selector, ...] = ()
    pin: tuple[Pin, ...] = ()
    min_rss: int = 64 * MiB  # real host: smaller processes are not tracked


@dataclass(frozen=True)
class Tiers:
    """Which tiers are fast and slow, and per-node kind overrides."""

    fast: tuple[str | int, ...] = ()  # tier names or node ids; empty: the fastest tier
    slow: tuple[str | int, ...] = ()  # empty: every tier that is not fast
    order: tuple[str, ...] = ()  # tier kinds fastest first, to cascade over (empty: the topology's order)
    overrides: dict[int, str] = field(default_factory=dict, hash=False)  # node -> tier kind


@dataclass(frozen=True)
class Watermark:
    """Per-node marks of a tier: demote when free < min_free_percent, never fill above max_used_percent."""

    min_free_percent: float = 5.0
    max_used_percent: float = 90.0


@dataclass(frozen=True)
class Hotness:
    """How heat is judged: the hot threshold, smoothing half-life, and the margins against noise and ping-pong."""

    hot_threshold: float = 1.0  # accesses/s (smoothed): colder regions are never promoted
    half_life: float = 3.0  # seconds: decay of the smoothed heat
    hysteresis: float = 0.25  # a promotion must beat the fast region it displaces by this fraction
    min_samples: float = 3.0  # ... and by this many sampled accesses (tracker's resolution), as must any promotion


@dataclass(frozen=True)
class RateLimit:
    """How much memory may move per second (and per interval), both directions together."""

    mb_per_s: float = 1024.0  # MiB/s of migration, both directions together
    mb_per_interval: float = 0.0  # MiB per loop interval; 0: only mb_per_s * interval


@dataclass(frozen=True)
class Damon:
    """How the real-kernel engines program DAMON."""

    sample_interval: float = 0.005  # seconds
    aggregation_interval: float = 0.1
    update_interval: float = 1.0
    min_regions: int = 10
    max_regions: int = 1000
    region_size: int = 2 * MiB  # the loop's unit of placement (heat and moves are per region of this size)
    take_over_damon_stat: bool = True  # turn the kernel's DAMON_STAT off while a DAMON engine runs (restored on stop)
    max_processes: int = 8  # move_pages engine: the kdamond pool, one per managed process (the largest ones)
    max_chunks: int = 8192  # move_pages engine: chunks grow past region_size to keep this many at most (0: never)


@dataclass(frozen=True)
class Metrics:
    """What the metrics may carry beyond bounded labels."""

    process_labels: bool = False  # allow pid/comm labels (unbounded: off by default)


@dataclass(frozen=True)
class NodeLabels:
    """Node labels for Kubernetes: where to write the node-feature-discovery feature file (None: not written)."""

    feature_file: str | None = None


INTERLEAVE_WEIGHTS: tuple[str, ...] = ("keep", "bandwidth")


@dataclass(frozen=True)
class Interleave:
    """Weighted interleave (kernel 6.9+): keep the kernel's weights, or set them from each node's HMAT bandwidth."""

    weights: str = "keep"  # keep | bandwidth
    override: bool = False  # bandwidth: also replace weights an operator or the kernel's auto mode set


@dataclass(frozen=True)
class Policy:
    """A validated policy file (frozen); Policy() is the built-in defaults."""

    interval: float = 5.0
    engine: str = "auto"
    dry_run: bool = False
    tiers: Tiers = Tiers()
    watermarks: dict[str, Watermark] = field(default_factory=lambda: {"default": Watermark()}, hash=False)
    hotness: Hotness = Hotness()
    rate_limit: RateLimit = RateLimit()
    cooldown: float = 15.0  # seconds a region stays put after a move (anti ping-pong)
    processes: Processes = Processes()
    damon: Damon = Damon()
    metrics: Metrics = Metrics()
    node_labels: NodeLabels = NodeLabels()
    ras: RasPolicy = field(
        default_factory=RasPolicy
    )  # CXL RAS: health thresholds and drain limits (cxltierd.ras.policy)
    tenants: tuple[Tenant, ...] = ()  # see policy/tenants.py
    interleave: Interleave = Interleave()
    objective: str = "pack"  # pack: hottest into the fastest tier; latency: lowest loaded latency (policy/latency.py)
    source: str = "<defaults>"
    digest: str = ""  # sha256 of the file's bytes, first 12 hex digits

    def watermark(self, tier: str) -> Watermark:
        """The watermarks of a tier kind (ddr, cxl, ...), else the default ones."""
        return self.watermarks.get(tier) or self.watermarks.get("default") or Watermark()

    def budget_bytes(self, interval: float | None = None) -> int:
        """Bytes the loop may migrate in one interval."""
        per_s = self.rate_limit.mb_per_s * MiB * (self.interval if interval is None else interval)
        cap = self.rate_limit.mb_per_interval * MiB
        return int(min(per_s, cap) if cap > 0 else per_s)


TOP_KEYS = (
    "interval",
    "engine",
    "dry_run",
    "tiers",
    "watermarks",
    "hotness",
    "rate_limit",
    "cooldown",
    "processes",
    "damon",
    "metrics",
    "node_labels",
    "ras",
    "tenants",
    "interleave",
    "objective",
)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (owned by root or by us, not writable by all). Raises
    ConfigError("FILE: key.path: what is wrong")."""
    p = Path(path)
    return parse_policy(read_config(p, "policy file", owned=True), str(p))


def parse_policy(data: bytes | str, source: str = "<string>") -> Policy:
    """A Policy from YAML text; ConfigError (one line naming `source` and the key path) when it is not valid."""
    raw = data.encode() if isinstance(data, str) else data
    with one_line_errors(source):
        policy = build_policy(parse_yaml(raw, source), source)
    return replace(policy, source=source, digest=hashlib.sha256(raw).hexdigest()[:12])


def build_policy(doc: Any, source: str = "", checker: Checker | None = None) -> Policy:
    """A Policy from a parsed YAML document (None = all defaults); errors start with `source` when it is given.
    `checker` replaces the default Checker(source) (policy.check collects every problem with one)."""
    c = checker or Checker(source)
    d = c.mapping(doc, "", TOP_KEYS)
    p = Policy()
    return Policy(
        interval=c.seconds(d, "interval", "", p.interval, lo=0.01, hi=3600),
        engine=c.choice(d, "engine", "", ENGINES, p.engine),
        dry_run=c.boolean(d, "dry_run", "", p.dry_run),
        cooldown=c.seconds(d, "cooldown", "", p.cooldown, lo=0, hi=86400),
        tiers=_tiers(c, d.get("tiers")),
        watermarks=_watermarks(c, d.get("watermarks")),
        hotness=_hotness(c, d.get("hotness")),
        rate_limit=_rate_limit(c, d.get("rate_limit")),
        processes=_processes(c, d.get("processes")),
        damon=_damon(c, d.get("damon")),
        metrics=_metrics(c, d.get("metrics")),
        node_labels=_node_labels(c, d.get("node_labels")),
        ras=RasPolicy.from_mapping(d.get("ras"), source, checker=c),
        tenants=parse_tenants(c, d.get("tenants"), _selector),
        interleave=_interleave(c, d.get("interleave")),
        objective=c.choice(d, "objective", "", OBJECTIVES, p.objective),
    )


def _tier_refs(c: Checker, t: dict[str, Any], key: str) -> tuple[str | int, ...]:
    """Tier names or node ids."""
    path = join("tiers", key)
    items = c.sequence(t.get(key), path)
    return tuple(
        c.integer(items, i, path, lo=0, hi=4095)
        if isinstance(item, int) and not isinstance(item, bool)
        else c.choice(items, i, path, TIER_KINDS)
        for i, item in enumerate(items)
    )


def _tiers(c: Checker, value: Any) -> Tiers:
    t = c.mapping(value, "tiers", ("fast", "slow", "order", "overrides"))
    raw = t.get("overrides") or {}
    if not isinstance(raw, dict):
        c.fail("tiers.overrides", f"must be a mapping of node id to tier, got {show(raw)}")
    overrides: dict[int, str] = {}
    for node in raw:
        n = node_id(node, hi=1 << 30)
        if n is None:
            c.fail(
                join("tiers.overrides", node if isinstance(node, str) else show(node)),
                "keys must be node ids (0, 1, ...)",
            )
        n = c.integer({node: n}, node, "tiers.overrides", lo=0, hi=4095)
        overrides[n] = c.choice(raw, node, "tiers.overrides", TIER_KINDS)
    fast, slow = _tier_refs(c, t, "fast"), _tier_refs(c, t, "slow")
    both = set(fast) & set(slow)
    if both:
        c.fail("tiers.slow", f"{', '.join(map(str, sorted(both, key=str)))} also listed in tiers.fast")
    items = c.sequence(t.get("order"), "tiers.order")
    order = tuple(c.choice(items, i, "tiers.order", TIER_KINDS) for i in range(len(items)))
    if len(set(order)) < len(order):
        c.fail("tiers.order", f"lists a tier twice: {', '.join(order)}")
    if order and (fast or slow):
        c.fail("tiers.order", "cannot be combined with tiers.fast or tiers.slow (the order names every tier's role)")
    return Tiers(fast=fast, slow=slow, order=order, overrides=overrides)


def _watermarks(c: Checker, value: Any) -> dict[str, Watermark]:
    w = c.mapping(value, "watermarks", ("default", *TIER_KINDS))
    out = {"default": Watermark()}
    for tier, marks in w.items():
        path = join("watermarks", tier)
        m = c.mapping(marks, path, ("min_free_percent", "max_used_percent"))
        base = out["default"]
        mark = Watermark(
            min_free_percent=c.number(m, "min_free_percent", path, base.min_free_percent, lo=0, hi=50),
            max_used_percent=c.number(m, "max_used_percent", path, base.max_used_percent, lo=10, hi=100),
        )
        if mark.max_used_percent > 100 - mark.min_free_percent:
            c.fail(
                join(path, "max_used_percent"),
                f"must be at most 100 - min_free_percent = {100 - mark.min_free_percent:g}, "
                f"got {mark.max_used_percent:g}",
            )
        out[tier] = mark
    return out


def _hotness(c: Checker, value: Any) -> Hotness:
    h = c.mapping(value, "hotness", ("hot_threshold", "half_life", "hysteresis", "min_samples"))
    d = Hotness()
    return Hotness(
        hot_threshold=c.number(h, "hot_threshold", "hotness", d.hot_threshold, lo=0, hi=1e9),
        half_life=c.seconds(h, "half_life", "hotness", d.half_life, lo=0, hi=86400),
        hysteresis=c.number(h, "hysteresis", "hotness", d.hysteresis, lo=0, hi=10),
        min_samples=c.number(h, "min_samples", "hotness", d.min_samples, lo=0, hi=1000),
    )


def _rate_limit(c: Checker, value: Any) -> RateLimit:
    r = c.mapping(value, "rate_limit", ("mb_per_s", "mb_per_interval"))
    d = RateLimit()
    return RateLimit(
        mb_per_s=c.number(r, "mb_per_s", "rate_limit", d.mb_per_s, lo=0, hi=1e6, lo_open=True),
        mb_per_interval=c.number(r, "mb_per_interval", "rate_limit", d.mb_per_interval, lo=0, hi=1e7),
    )


SELECTOR_KEYS = ("pid", "name", "regex", "cgroup")


def _selector(c: Checker, value: Any, path: str, extra: tuple[str, ...] = ()) -> Selector:
    s = c.mapping(value, path, (*SELECTOR_KEYS, *extra))
    if not any(k in s for k in SELECTOR_KEYS):
        c.fail(path, f"needs at least one of {', '.join(SELECTOR_KEYS)}")
    return Selector(
        pid=c.integer(s, "pid", path, None, lo=1, hi=1 << 22),
        name=c.string(s, "name", path, None),
        regex=c.regex(s, "regex", path, None),
        cgroup=c.string(s, "cgroup", path, None),
    )


def _selectors(c: Checker, p: dict[str, Any], key: str) -> tuple[Selector, ...]:
    path = join("processes", key)
    return tuple(_selector(c, s, join(path, i)) for i, s in enumerate(c.sequence(p.get(key), path)))


def _processes(c: Checker, value: Any) -> Processes:
    p = c.mapping(value, "processes", ("manage", "exclude", "pin", "min_rss"))
    pins = []
    for i, item in enumerate(c.sequence(p.get("pin"), "processes.pin")):
        path = join("processes.pin", i)
        match = _selector(c, item, path, extra=("tier",))
        pins.append(Pin(match=match, tier=c.choice(item, "tier", path, TIER_KINDS)))
    return Processes(
        manage=_selectors(c, p, "manage"),
        exclude=_selectors(c, p, "exclude"),
        pin=tuple(pins),
        min_rss=c.size(p, "min_rss", "processes", Processes.min_rss, lo=0, hi=1 << 50),
    )


def _damon(c: Checker, value: Any) -> Damon:
    keys = (
        "sample_interval",
        "aggregation_interval",
        "update_interval",
        "min_regions",
        "max_regions",
        "region_size",
        "take_over_damon_stat",
        "max_processes",
        "max_chunks",
    )
    dm = c.mapping(value, "damon", keys)
    d = Damon()
    out = Damon(
        sample_interval=c.seconds(dm, "sample_interval", "damon", d.sample_interval, lo=0.0001, hi=10),
        aggregation_interval=c.seconds(dm, "aggregation_interval", "damon", d.aggregation_interval, lo=0.001, hi=600),
        update_interval=c.seconds(dm, "update_interval", "damon", d.update_interval, lo=0.001, hi=3600),
        min_regions=c.integer(dm, "min_regions", "damon", d.min_regions, lo=3, hi=1 << 20),
        max_regions=c.integer(dm, "max_regions", "damon", d.max_regions, lo=3, hi=1 << 20),
        region_size=c.size(dm, "region_size", "damon", d.region_size, lo=PAGE_SIZE, hi=1 << 34),
        take_over_damon_stat=c.boolean(dm, "take_over_damon_stat", "damon", d.take_over_damon_stat),
        max_processes=c.integer(dm, "max_processes", "damon", d.max_processes, lo=1, hi=MAX_KDAMONDS),
        max_chunks=c.integer(dm, "max_chunks", "damon", d.max_chunks, lo=0, hi=1 << 24),
    )
    if out.aggregation_interval < out.sample_interval:
        c.fail("damon.aggregation_interval", "must be at least damon.sample_interval")
    if out.max_regions < out.min_regions:
        c.fail("damon.max_regions", f"must be at least damon.min_regions ({out.min_regions})")
    if out.region_size % PAGE_SIZE:
        c.fail("damon.region_size", f"must be a multiple of {PAGE_SIZE}, got {out.region_size}")
    return out


def _metrics(c: Checker, value: Any) -> Metrics:
    m = c.mapping(value, "metrics", ("process_labels",))
    return Metrics(process_labels=c.boolean(m, "process_labels", "metrics", Metrics.process_labels))


def _node_labels(c: Checker, value: Any) -> NodeLabels:
    n = c.mapping(value, "node_labels", ("feature_file",))
    if n.get("feature_file") is None:
        return NodeLabels()
    path = c.string(n, "feature_file", "node_labels")
    if not path.startswith("/") or path.endswith("/"):
        c.fail("node_labels.feature_file", f"must be an absolute file path, got {path!r}")
    return NodeLabels(feature_file=path)


def _interleave(c: Checker, value: Any) -> Interleave:
    i = c.mapping(value, "interleave", ("weights", "override"))
    d = Interleave()
    return Interleave(
        weights=c.choice(i, "weights", "interleave", INTERLEAVE_WEIGHTS, d.weights),
        override=c.boolean(i, "override", "interleave", d.override),
    )
