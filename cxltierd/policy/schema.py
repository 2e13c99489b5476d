"""The policy file: YAML -> validated, typed, immutable Policy. Pure except for load_policy's one file read.

Every key is documented in packaging/policy.yaml (installed as /etc/cxltierd/policy.yaml).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxltierd import validate as v
from cxltierd.errors import ConfigError
from cxltierd.topology import TIER_KINDS
from cxltierd.units import parse_seconds, parse_size

DEFAULT_PATH = "/etc/cxltierd/policy.yaml"
ENGINES: tuple[str, ...] = ("auto", "simulated", "move_pages", "damos", "numa_balancing")
MiB = 1 << 20


@dataclass(frozen=True)
class Selector:
    """Matches a process when every given field matches (an empty selector matches nothing)."""

    pid: int | None = None
    name: str | None = None  # comm / executable base name, exact
    regex: str | None = None  # searched in the command line
    cgroup: str | None = None  # cgroup v2 path prefix ("/ai.slice")

    def matches(self, pid: int, name: str, cmdline: str, cgroup: str) -> bool:
        if self.pid is None and self.name is None and self.regex is None and self.cgroup is None:
            return False
        return (
            (self.pid is None or self.pid == pid)
            and (self.name is None or self.name == name)
            and (self.regex is None or re.search(self.regex, cmdline or name) is not None)
            and (self.cgroup is None or _cgroup_under(cgroup, self.cgroup))
        )


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
    manage: tuple[Selector, ...] = ()  # empty: every process (above min_rss on a real host)
    exclude: tuple[Selector, ...] = ()
    pin: tuple[Pin, ...] = ()
    min_rss: int = 64 * MiB  # real host: smaller processes are not tracked


@dataclass(frozen=True)
class Tiers:
    fast: tuple[str | int, ...] = ()  # tier names or node ids; empty: the fastest tier
    slow: tuple[str | int, ...] = ()  # empty: every tier that is not fast
    overrides: dict[int, str] = field(default_factory=dict, hash=False)  # node -> tier kind


@dataclass(frozen=True)
class Watermark:
    """Per-node marks of a tier: demote when free < min_free_percent, never fill above max_used_percent."""

    min_free_percent: float = 5.0
    max_used_percent: float = 90.0


@dataclass(frozen=True)
class Hotness:
    hot_threshold: float = 1.0  # accesses/s (smoothed): colder regions are never promoted
    half_life: float = 2.0  # seconds: decay of the smoothed heat
    hysteresis: float = 0.25  # a promotion must beat the fast region it displaces by this fraction
    min_samples: float = 3.0  # ... and by this many sampled accesses (of the tracker's resolution), as must any promotion


@dataclass(frozen=True)
class RateLimit:
    mb_per_s: float = 512.0  # MiB/s of migration, both directions together
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


@dataclass(frozen=True)
class Metrics:
    process_labels: bool = False  # allow pid/comm labels (unbounded: off by default)


@dataclass(frozen=True)
class Policy:
    interval: float = 5.0
    engine: str = "auto"
    dry_run: bool = False
    tiers: Tiers = Tiers()
    watermarks: dict[str, Watermark] = field(default_factory=lambda: {"default": Watermark()}, hash=False)
    hotness: Hotness = Hotness()
    rate_limit: RateLimit = RateLimit()
    cooldown: float = 30.0  # seconds a region stays put after a move (anti ping-pong)
    processes: Processes = Processes()
    damon: Damon = Damon()
    metrics: Metrics = Metrics()
    source: str = "<defaults>"
    digest: str = ""  # sha256 of the file's bytes, first 12 hex digits

    def watermark(self, tier: str) -> Watermark:
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
)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file. Raises ConfigError("FILE: key.path: what is wrong")."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from None
    return parse_policy(data, str(p))


def parse_policy(data: bytes | str, source: str = "<string>") -> Policy:
    raw = data.encode() if isinstance(data, str) else data
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    try:
        policy = build_policy(doc)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return Policy(**{**policy.__dict__, "source": source, "digest": hashlib.sha256(raw).hexdigest()[:12]})


def build_policy(doc: Any) -> Policy:
    """A Policy from a parsed YAML document (None = all defaults)."""
    d = v.mapping("", doc, TOP_KEYS)
    out: dict[str, Any] = {}
    if "interval" in d:
        out["interval"] = _seconds("interval", d["interval"], 0.01, 3600)
    if "engine" in d:
        out["engine"] = v.choice("engine", d["engine"], ENGINES)
    if "dry_run" in d:
        out["dry_run"] = v.boolean("dry_run", d["dry_run"])
    if "cooldown" in d:
        out["cooldown"] = _seconds("cooldown", d["cooldown"], 0, 86400)
    if "tiers" in d:
        out["tiers"] = _tiers(d["tiers"])
    if "watermarks" in d:
        out["watermarks"] = _watermarks(d["watermarks"])
    if "hotness" in d:
        out["hotness"] = _hotness(d["hotness"])
    if "rate_limit" in d:
        r = v.mapping("rate_limit", d["rate_limit"], ("mb_per_s", "mb_per_interval"))
        out["rate_limit"] = RateLimit(
            mb_per_s=v.number("rate_limit.mb_per_s", r.get("mb_per_s", RateLimit.mb_per_s), 0, 1e6, lo_open=True),
            mb_per_interval=v.number("rate_limit.mb_per_interval", r.get("mb_per_interval", 0.0), 0, 1e7),
        )
    if "processes" in d:
        out["processes"] = _processes(d["processes"])
    if "damon" in d:
        out["damon"] = _damon(d["damon"])
    if "metrics" in d:
        m = v.mapping("metrics", d["metrics"], ("process_labels",))
        out["metrics"] = Metrics(process_labels=v.boolean("metrics.process_labels", m.get("process_labels", False)))
    return Policy(**out)


def _seconds(path: str, value: Any, lo: float, hi: float) -> float:
    seconds = v.converted(path, value, parse_seconds)
    return v.number(path, seconds, lo, hi)


def _tier_refs(path: str, value: Any) -> tuple[str | int, ...]:
    out: list[str | int] = []
    for i, item in enumerate(v.sequence(path, value)):
        if isinstance(item, int) and not isinstance(item, bool):
            out.append(v.integer(v.join(path, i), item, 0, 4095))
        else:
            out.append(v.choice(v.join(path, i), item, TIER_KINDS))
    return tuple(out)


def _tiers(value: Any) -> Tiers:
    t = v.mapping("tiers", value, ("fast", "slow", "overrides"))
    raw = t.get("overrides") or {}
    if not isinstance(raw, dict):
        raise v.fail("tiers.overrides", f"must be a mapping of node id to tier, got {v.show(raw)}")
    overrides: dict[int, str] = {}
    for node, kind in raw.items():
        path = f"tiers.overrides.{node}"
        if not (isinstance(node, int) and not isinstance(node, bool)) and not (
            isinstance(node, str) and node.isdigit()
        ):
            raise v.fail(path, "keys must be node ids (0, 1, ...)")
        overrides[v.integer(path, int(node), 0, 4095)] = v.choice(path, kind, TIER_KINDS)
    fast, slow = _tier_refs("tiers.fast", t.get("fast")), _tier_refs("tiers.slow", t.get("slow"))
    both = set(fast) & set(slow)
    if both:
        raise v.fail("tiers.slow", f"{', '.join(map(str, sorted(both, key=str)))} also listed in tiers.fast")
    return Tiers(fast=fast, slow=slow, overrides=overrides)


def _watermarks(value: Any) -> dict[str, Watermark]:
    w = v.mapping("watermarks", value, ("default", *TIER_KINDS))
    out = {"default": Watermark()}
    for tier, marks in w.items():
        path = v.join("watermarks", tier)
        m = v.mapping(path, marks, ("min_free_percent", "max_used_percent"))
        base = out["default"]
        mark = Watermark(
            min_free_percent=v.number(
                path + ".min_free_percent", m.get("min_free_percent", base.min_free_percent), 0, 50
            ),
            max_used_percent=v.number(
                path + ".max_used_percent", m.get("max_used_percent", base.max_used_percent), 10, 100
            ),
        )
        if mark.max_used_percent > 100 - mark.min_free_percent:
            raise v.fail(
                path + ".max_used_percent",
                f"must be at most 100 - min_free_percent = {100 - mark.min_free_percent:g}, "
                f"got {mark.max_used_percent:g}",
            )
        out[tier] = mark
    return out


def _hotness(value: Any) -> Hotness:
    h = v.mapping("hotness", value, ("hot_threshold", "half_life", "hysteresis", "min_samples"))
    d = Hotness()
    return Hotness(
        hot_threshold=v.number("hotness.hot_threshold", h.get("hot_threshold", d.hot_threshold), 0, 1e9),
        half_life=_seconds("hotness.half_life", h.get("half_life", d.half_life), 0, 86400),
        hysteresis=v.number("hotness.hysteresis", h.get("hysteresis", d.hysteresis), 0, 10),
        min_samples=v.number("hotness.min_samples", h.get("min_samples", d.min_samples), 0, 1000),
    )


SELECTOR_KEYS = ("pid", "name", "regex", "cgroup")


def _selector(path: str, value: Any, extra: tuple[str, ...] = ()) -> Selector:
    s = v.mapping(path, value, (*SELECTOR_KEYS, *extra))
    if not any(k in s for k in SELECTOR_KEYS):
        raise v.fail(path, f"needs at least one of {', '.join(SELECTOR_KEYS)}")
    return Selector(
        pid=v.integer(path + ".pid", s["pid"], 1, 1 << 22) if "pid" in s else None,
        name=v.string(path + ".name", s["name"]) if "name" in s else None,
        regex=v.regex(path + ".regex", s["regex"]) if "regex" in s else None,
        cgroup=v.string(path + ".cgroup", s["cgroup"]) if "cgroup" in s else None,
    )


def _processes(value: Any) -> Processes:
    p = v.mapping("processes", value, ("manage", "exclude", "pin", "min_rss"))
    pins = []
    for i, item in enumerate(v.sequence("processes.pin", p.get("pin"))):
        path = v.join("processes.pin", i)
        sel = _selector(path, item, extra=("tier",))
        if "tier" not in item:
            raise v.fail(path + ".tier", "is required")
        pins.append(Pin(match=sel, tier=v.choice(path + ".tier", item["tier"], TIER_KINDS)))
    return Processes(
        manage=tuple(
            _selector(v.join("processes.manage", i), s)
            for i, s in enumerate(v.sequence("processes.manage", p.get("manage")))
        ),
        exclude=tuple(
            _selector(v.join("processes.exclude", i), s)
            for i, s in enumerate(v.sequence("processes.exclude", p.get("exclude")))
        ),
        pin=tuple(pins),
        min_rss=_size("processes.min_rss", p.get("min_rss", Processes.min_rss), 0, 1 << 50),
    )


def _size(path: str, value: Any, lo: int, hi: int) -> int:
    size = v.converted(path, value, parse_size)
    return int(v.number(path, size, lo, hi))


def _damon(value: Any) -> Damon:
    keys = ("sample_interval", "aggregation_interval", "update_interval", "min_regions", "max_regions", "region_size")
    dm = v.mapping("damon", value, keys)
    d = Damon()
    out = Damon(
        sample_interval=_seconds("damon.sample_interval", dm.get("sample_interval", d.sample_interval), 0.0001, 10),
        aggregation_interval=_seconds(
            "damon.aggregation_interval", dm.get("aggregation_interval", d.aggregation_interval), 0.001, 600
        ),
        update_interval=_seconds("damon.update_interval", dm.get("update_interval", d.update_interval), 0.001, 3600),
        min_regions=v.integer("damon.min_regions", dm.get("min_regions", d.min_regions), 3, 1 << 20),
        max_regions=v.integer("damon.max_regions", dm.get("max_regions", d.max_regions), 3, 1 << 20),
        region_size=_size("damon.region_size", dm.get("region_size", d.region_size), 4096, 1 << 34),
    )
    if out.aggregation_interval < out.sample_interval:
        raise v.fail("damon.aggregation_interval", "must be at least damon.sample_interval")
    if out.max_regions < out.min_regions:
        raise v.fail("damon.max_regions", f"must be at least damon.min_regions ({out.min_regions})")
    if out.region_size % 4096:
        raise v.fail("damon.region_size", f"must be a multiple of 4096, got {out.region_size}")
    return out
