"""CXL objects (memdevs, regions, decoders, dax devices) as JSON documents and text lines, from typed facts."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from cxltierd.facts import Access, DaxDevice, Decoder, HostFacts, Memdev, Region
from cxltierd.units import human_bytes


def _access(a: Access | None) -> dict[str, Any] | None:
    return None if a is None else asdict(a) | {"initiators": list(a.initiators)}


def memdev_json(m: Memdev) -> dict[str, Any]:
    """A memdev as JSON; fields `cxl list -M` also shows carry its names."""
    return {
        "memdev": m.memdev,
        "ram_size": m.ram_size,
        "pmem_size": m.pmem_size,
        "serial": m.serial,
        "numa_node": m.numa_node,
        "host": m.host,
        "firmware_version": m.firmware_version,
        "ram_qos_class": m.ram_qos_class,
        "security_state": m.security_state,
        "enabled": m.enabled,
    }


def dax_json(d: DaxDevice) -> dict[str, Any]:
    """A dax device as JSON with `daxctl list`'s field names, plus its region, resource and kind."""
    return {
        "chardev": d.chardev,
        "size": d.size,
        "target_node": d.target_node,
        "align": d.align,
        "mode": d.mode,
        "online_memblocks": d.online_memblocks,
        "total_memblocks": d.total_memblocks,
        "movable": d.movable,
        "region": d.region,
        "resource": d.resource,
        "kind": d.kind,
    }


def region_json(g: Region, dax: tuple[DaxDevice, ...]) -> dict[str, Any]:
    """A region as JSON shaped like `cxl list -R -T -X` (mappings, dax region, devices), plus target node and access."""
    devices = [d for d in dax if d.region == g.region]
    return {
        "region": g.region,
        "resource": g.resource,
        "size": g.size,
        "type": g.mode,
        "interleave_ways": g.interleave_ways,
        "interleave_granularity": g.interleave_granularity,
        "decode_state": g.decode_state,
        "enabled": g.enabled,
        "mappings": [{"position": m.position, "memdev": m.memdev, "decoder": m.decoder} for m in g.mappings],
        "daxregion": None
        if g.dax_region is None
        else {
            "id": int(g.dax_region.removeprefix("dax_region")),
            "devices": [dax_json(d) for d in devices],
        },
        "target_node": next((d.target_node for d in devices if d.target_node is not None), None),
        "access0": _access(g.access0),
        "access1": _access(g.access1),
    }


def decoder_json(d: Decoder) -> dict[str, Any]:
    """A decoder as JSON; fields `cxl list -D` also shows carry its names."""
    return {
        "decoder": d.decoder,
        "kind": d.kind,
        "port": d.port,
        "resource": d.start,
        "size": d.size,
        "interleave_ways": d.interleave_ways,
        "interleave_granularity": d.interleave_granularity,
        "target_list": list(d.target_list),
        "mode": d.mode,
        "dpa_resource": d.dpa_resource,
        "dpa_size": d.dpa_size,
        "region": d.region,
        "locked": d.locked,
        "capabilities": list(d.capabilities),
        "memdev": d.memdev,
    }


def cxl_text(facts: HostFacts) -> list[str]:
    """Text lines for memdevs, regions with their dax devices, and dax devices outside a region; empty if none."""
    lines = []
    if facts.memdevs:
        lines.append("CXL memdevs:")
        for m in facts.memdevs:
            lines.append(
                f"  {m.memdev:<6} ram {human_bytes(m.ram_size)} pmem {human_bytes(m.pmem_size)} host {m.host}"
                f" serial {m.serial} fw {m.firmware_version!r} {'enabled' if m.enabled else 'disabled'}"
            )
    if facts.regions:
        lines.append("CXL regions:")
        for g in facts.regions:
            devs = [d for d in facts.dax if d.region == g.region]
            where = ", ".join(f"{d.chardev} {d.mode or 'unbound'} -> node {d.target_node}" for d in devs) or "no dax"
            memdevs = ",".join(m.memdev or m.decoder for m in g.mappings)
            lines.append(
                f"  {g.region:<8} {g.mode or '?'} {human_bytes(g.size)} {g.interleave_ways}-way [{memdevs}]"
                f" {g.decode_state or '?'} {'enabled' if g.enabled else 'disabled'}; {where}"
            )
    others = [d for d in facts.dax if d.region is None]
    if others:
        lines.append("Other dax devices:")
        for d in others:
            lines.append(f"  {d.chardev} {d.kind} {human_bytes(d.size)} {d.mode or 'unbound'} node {d.target_node}")
    return lines
