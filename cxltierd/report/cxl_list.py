"""`cxltierd cxl`: memdevs, decoders and regions as `cxl list -M -D -R` (ndctl) prints them, from typed facts.

Follows ndctl's cxl/json.c and cxl/filter.c (v76 to v81), object by object:

- the top level is a list; with objects of more than one kind, each kind is one container in ndctl's order
  ({"memdevs": [...]}, {"root decoders": [...]}, {"port decoders": [...]}, {"endpoint decoders": [...]},
  {"regions": [...]}); with one kind, its objects themselves;
- the bus is walked as ndctl walks it: root decoders (their regions by start address), then per port its
  endpoints (memdev, endpoint decoders), its own decoders, then its child ports; with decoders and regions both
  asked, a root decoder holds its regions as "regions:decoderX.Y" (regions alone are a top-level list);
- without `idle` (ndctl's -i), unsized decoders, disabled regions, disabled ports (and all below them), endpoints
  and memdevs are left out; with it, memdevs without an endpoint come first as "anon memdevs";
- a field is printed only when it is set, as ndctl does: no -1, 0, "none" or null stand-ins; sizes and addresses
  are numbers (ndctl without -u); `state: "disabled"` only for a disabled object.

Deliberate differences, each because the facts lack what ndctl reads: decoders' `targets` and regions' `mappings`
(ndctl -T), regions' `daxregion` (-X: use `daxctl list -R -D`), memdev health and partition details (-vvv), and
regions' `qos_class_mismatch` are not printed. Fields newer than ndctl 76 (memdevs' `firmware_version` and
`*_qos_class`, regions' `type`, root decoders' `qos_class`) are printed as ndctl 81 does.
"""

from __future__ import annotations

import os
import re
from typing import Any

from cxltierd.facts import Decoder, HostFacts, Memdev, Port, Region

ULLONG_MAX = (1 << 64) - 1
UINT_MAX = (1 << 32) - 1
QOS_NONE = -1
MODES = ("none", "mixed", "pmem", "ram")  # ndctl's decoder modes; an unknown mode string reads as "mixed"


def _number(name: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", name)]


def _unset(x: int | None, limit: int = ULLONG_MAX) -> int:
    """A value as libcxl holds it: an unreadable attribute is the type's maximum."""
    return limit if x is None else x


def memdev_json(m: Memdev) -> dict[str, Any]:
    """A memdev as `cxl list -M` prints it."""
    out: dict[str, Any] = {"memdev": m.memdev}
    if m.pmem_size:
        out["pmem_size"] = m.pmem_size
        if m.pmem_qos_class is not None and m.pmem_qos_class != QOS_NONE:
            out["pmem_qos_class"] = m.pmem_qos_class
    if m.ram_size:
        out["ram_size"] = m.ram_size
        if m.ram_qos_class is not None and m.ram_qos_class != QOS_NONE:
            out["ram_qos_class"] = m.ram_qos_class
    if _unset(m.serial) < ULLONG_MAX:
        out["serial"] = m.serial
    if m.numa_node is not None and m.numa_node >= 0:
        out["numa_node"] = m.numa_node
    out["host"] = m.host
    if m.firmware_version is not None:
        out["firmware_version"] = m.firmware_version
    if not m.enabled:
        out["state"] = "disabled"
    return out


def _mode(text: str | None) -> str:
    if text is None:
        return "none"
    return text if text in MODES else "mixed"


def decoder_json(d: Decoder, kind: str, regions: tuple[Region, ...] = ()) -> dict[str, Any]:
    """A decoder as `cxl list -D` prints it; `kind` is its port's (root, switch or endpoint), `regions` those
    under a root decoder (for max_available_extent)."""
    out: dict[str, Any] = {"decoder": d.decoder}
    size, start = _unset(d.size), _unset(d.start)
    if size and start < ULLONG_MAX:
        out["resource"] = start
    if size and size < ULLONG_MAX:
        out["size"] = size
    ways = _unset(d.interleave_ways, UINT_MAX)
    if ways < UINT_MAX:
        out["interleave_ways"] = ways
        if ways > 1 and _unset(d.interleave_granularity, UINT_MAX) < UINT_MAX:
            out["interleave_granularity"] = d.interleave_granularity
    if kind != "root" and d.region:
        out["region"] = d.region
    if size == 0:
        out["state"] = "disabled"
    if kind == "endpoint":
        dpa_size, dpa = _unset(d.dpa_size), _unset(d.dpa_resource)
        if dpa_size and dpa < ULLONG_MAX:
            out["dpa_resource"] = dpa
        if dpa_size and dpa_size < ULLONG_MAX:
            out["dpa_size"] = dpa_size
        if _mode(d.mode) != "none":
            out["mode"] = _mode(d.mode)
    if kind == "root":
        caps = set(d.capabilities)
        if "type3" in caps:
            extent = max_available_extent(d, regions)
            if extent < ULLONG_MAX:
                out["max_available_extent"] = extent
            if "pmem" in caps:
                out["pmem_capable"] = True
            if "ram" in caps:
                out["volatile_capable"] = True
        if "type2" in caps:
            out["accelmem_capable"] = True
        if d.qos_class is not None and d.qos_class != QOS_NONE:
            out["qos_class"] = d.qos_class
    if kind != "endpoint":
        out["nr_targets"] = len(d.target_list)
    return out


def max_available_extent(d: Decoder, regions: tuple[Region, ...]) -> int:
    """The largest free stretch of a root decoder's window between its configured regions (libcxl's rule)."""
    start, size = _unset(d.start), _unset(d.size)
    if start == ULLONG_MAX:
        return ULLONG_MAX
    prev_end, best = start - 1, 0
    for g in sorted(regions, key=_region_start):
        if not g.size or g.decode_state == "reset":
            continue
        best = max(best, _region_start(g) - prev_end - 1)
        prev_end = _region_start(g) + g.size - 1
    return max(best, (start + size - 1 - prev_end) % (1 << 64))


def _region_start(g: Region) -> int:
    """The region start as libcxl holds it: the resource, 0 when unset."""
    return g.resource if g.resource is not None and g.resource < ULLONG_MAX else 0


def region_json(g: Region) -> dict[str, Any]:
    """A region as `cxl list -R` prints it."""
    out: dict[str, Any] = {"region": g.region, "resource": _region_start(g)}
    if _unset(g.size) < ULLONG_MAX:
        out["size"] = g.size
    if g.mode is not None and g.mode != "none":
        out["type"] = g.mode
    if g.interleave_ways is not None and g.interleave_ways < (1 << 31) - 1:
        out["interleave_ways"] = g.interleave_ways
    if g.interleave_granularity is not None and g.interleave_granularity < (1 << 31) - 1:
        out["interleave_granularity"] = g.interleave_granularity
    out["decode_state"] = "commit" if g.decode_state == "commit" else "reset"
    if not g.enabled:
        out["state"] = "disabled"
    return out


def _parent(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def cxl_list(
    facts: HostFacts, memdevs: bool = True, decoders: bool = True, regions: bool = True, idle: bool = False
) -> list[Any]:
    """What `cxl list` prints with -M, -D and -R as asked (-i with `idle`), as a JSON value."""
    by_port: dict[str, list[Decoder]] = {}
    for d in facts.decoders:
        by_port.setdefault(d.port, []).append(d)
    children: dict[str, list[Port]] = {}
    for p in facts.ports:
        if p.kind != "root":
            children.setdefault(_parent(p.path), []).append(p)
    under: dict[str, list[Region]] = {}
    for g in facts.regions:
        under.setdefault(_parent(g.path), []).append(g)
    mem_of = {m.memdev: m for m in facts.memdevs}
    out: dict[str, list[Any]] = {
        k: [] for k in ("anon memdevs", "memdevs", "root decoders", "port decoders", "endpoint decoders", "regions")
    }

    def walk_decoders(port: Port, kind: str, into: str) -> None:
        for d in sorted(by_port.get(port.port, []), key=lambda d: _number(d.decoder)):
            mine = tuple(under.get(d.decoder, ()))
            jdecoder = None
            if decoders:
                if not idle and d.size == 0:
                    continue  # regions under an unsized root decoder are skipped with it, as ndctl does
                jdecoder = decoder_json(d, kind, mine)
                out[into].append(jdecoder)
            if regions and kind == "root":
                listed = [region_json(g) for g in sorted(mine, key=_region_start) if idle or g.enabled]
                if jdecoder is None:
                    out["regions"].extend(listed)
                elif listed:  # a listed root decoder holds its regions
                    jdecoder[f"regions:{d.decoder}"] = listed

    def walk_endpoints(port: Port) -> None:
        for ep in sorted(children.get(port.port, []), key=lambda p: _number(p.port)):
            if ep.kind != "endpoint" or not (idle or ep.enabled):
                continue
            m = mem_of.get(ep.host or "")
            if memdevs and m is not None and (idle or m.enabled):
                out["memdevs"].append(memdev_json(m))
            walk_decoders(ep, "endpoint", "endpoint decoders")

    def walk_ports(parent: Port) -> None:
        for p in sorted(children.get(parent.port, []), key=lambda p: _number(p.port)):
            if p.kind == "endpoint" or not (idle or p.enabled):
                continue
            walk_endpoints(p)
            walk_decoders(p, "switch", "port decoders")
            walk_ports(p)

    if memdevs and idle:
        out["anon memdevs"] = [memdev_json(m) for m in facts.memdevs if not m.enabled]
    for root in sorted((p for p in facts.ports if p.kind == "root"), key=lambda p: _number(p.port)):
        walk_decoders(root, "root", "root decoders")
        walk_endpoints(root)
        walk_ports(root)
    filled = [(k, v) for k, v in out.items() if v]
    if len(filled) > 1:
        return [{k: v} for k, v in filled]
    return [x for _, v in filled for x in v]
