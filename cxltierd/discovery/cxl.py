"""The CXL bus (/sys/bus/cxl/devices) and dax devices (/sys/bus/dax/devices)."""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import replace

from cxltierd.discovery.nodes import read_access
from cxltierd.discovery.parse import parse_int_list
from cxltierd.discovery.reader import Reader
from cxltierd.facts import DaxDevice, Decoder, Mapping, Memdev, MemoryBlock, Port, Region

CXL = "/sys/bus/cxl/devices"
DAX = "/sys/bus/dax/devices"


def _devices(r: Reader, bus: str) -> list[tuple[str, str]]:
    """(name, resolved kernel path) of each device link on a bus; dangling links become warnings."""
    out = []
    for name in r.fs.listdir(bus):
        link = f"{bus}/{name}"
        try:
            path = r.fs.realpath(link)
        except Exception as e:  # HostFSError for links leaving the root
            r.warn(str(e))
            continue
        if not r.fs.is_dir(path):
            r.warn(f"{r.fs.path(link)}: dangling device link, skipped")
            continue
        out.append((name, path))
    return out


def _flag(r: Reader, kpath: str) -> bool | None:
    v = r.int(kpath, required=False)
    return None if v is None else v != 0


def read_memdev(r: Reader, name: str, path: str) -> Memdev:
    """One CXL memory device (memN): capacities, serial, node, firmware, QoS class, security state, driver bound."""
    return Memdev(
        memdev=name,
        path=path,
        host=os.path.basename(os.path.dirname(path)) or None,
        ram_size=r.int(f"{path}/ram/size", required=False),
        pmem_size=r.int(f"{path}/pmem/size", required=False),
        serial=r.int(f"{path}/serial", required=False),
        numa_node=r.int(f"{path}/numa_node", required=False),
        firmware_version=r.text(f"{path}/firmware_version", required=False),
        ram_qos_class=r.int(f"{path}/ram/qos_class", required=False),
        security_state=r.text(f"{path}/security/state", required=False),
        enabled=r.fs.readlink(f"{path}/driver") is not None,
        pmem_qos_class=r.int(f"{path}/pmem/qos_class", required=False),
    )


def read_port(r: Reader, name: str, path: str) -> Port:
    """One CXL port (rootN, portN, endpointN): its kind and the device above it (uport), when that resolves."""
    kind = "root" if name.startswith("root") else "endpoint" if name.startswith("endpoint") else "port"
    host = None
    if r.fs.readlink(f"{path}/uport") is not None:
        try:
            host = os.path.basename(r.fs.realpath(f"{path}/uport"))
        except Exception:
            host = None
    return Port(port=name, kind=kind, path=path, host=host, enabled=r.fs.readlink(f"{path}/driver") is not None)


def read_decoder(r: Reader, name: str, path: str, ports: dict[str, Port]) -> Decoder:
    """One HDM decoder: range, interleave, mode, DPA, region and capabilities; endpoint decoders name their memdev."""
    port = os.path.basename(os.path.dirname(path))
    port_kind = ports[port].kind if port in ports else None
    devtype = r.text(f"{path}/devtype", required=False) or ""
    if devtype.startswith("cxl_decoder_"):
        kind = devtype.removeprefix("cxl_decoder_")
    else:
        kind = {"root": "root", "endpoint": "endpoint"}.get(port_kind or "", "switch")
    caps = tuple(c for c in ("ram", "pmem", "type2", "type3") if _flag(r, f"{path}/cap_{c}"))
    memdev = None
    if kind == "endpoint" and port in ports and ports[port].host and ports[port].host.startswith("mem"):  # type: ignore[union-attr]
        memdev = ports[port].host
    return Decoder(
        decoder=name,
        kind=kind,
        port=port,
        start=r.int(f"{path}/start", required=False),
        size=r.int(f"{path}/size", required=False),
        interleave_ways=r.int(f"{path}/interleave_ways", required=False),
        interleave_granularity=r.int(f"{path}/interleave_granularity", required=False),
        target_list=r.parse(f"{path}/target_list", parse_int_list, required=False) or (),
        mode=r.text(f"{path}/mode", required=False),
        dpa_resource=r.int(f"{path}/dpa_resource", required=False),
        dpa_size=r.int(f"{path}/dpa_size", required=False),
        region=r.text(f"{path}/region", required=False) or None,
        locked=_flag(r, f"{path}/locked"),
        target_type=r.text(f"{path}/target_type", required=False),
        capabilities=caps,
        memdev=memdev,
        qos_class=r.int(f"{path}/qos_class", required=False) if kind == "root" else None,
    )


def read_region(r: Reader, name: str, path: str, decoders: dict[str, Decoder]) -> Region:
    """One CXL region: range, interleave, decode state, target decoders (with memdevs), dax region and access."""
    ways = r.int(f"{path}/interleave_ways")
    mappings = []
    for pos in range(ways or 0):
        target = r.text(f"{path}/target{pos}", required=False)
        if target:
            mappings.append(Mapping(position=pos, decoder=target, memdev=getattr(decoders.get(target), "memdev", None)))
    commit = r.int(f"{path}/commit", required=False)
    dax_region = next((e for e in r.fs.listdir(path) if re.fullmatch(r"dax_region\d+", e)), None)
    return Region(
        region=name,
        path=path,
        mode=r.text(f"{path}/mode", required=False),
        size=r.int(f"{path}/size"),
        resource=r.int(f"{path}/resource"),
        interleave_ways=ways,
        interleave_granularity=r.int(f"{path}/interleave_granularity", required=False),
        uuid=r.text(f"{path}/uuid", required=False) or None,
        decode_state=None if commit is None else ("commit" if commit else "reset"),
        enabled=r.fs.readlink(f"{path}/driver") is not None,
        mappings=tuple(mappings),
        dax_region=dax_region,
        access0=read_access(r, f"{path}/access0"),
        access1=read_access(r, f"{path}/access1"),
    )


def read_cxl(r: Reader) -> tuple[tuple[Memdev, ...], tuple[Port, ...], tuple[Decoder, ...], tuple[Region, ...]]:
    """Memdevs, ports, decoders and regions on the CXL bus, each sorted by the numbers in its name."""
    devices = _devices(r, CXL)
    memdevs, ports, dec_paths, reg_paths = [], {}, [], []
    for name, path in devices:
        if re.fullmatch(r"mem\d+", name):
            memdevs.append(read_memdev(r, name, path))
        elif re.fullmatch(r"(root|port|endpoint)\d+", name):
            ports[name] = read_port(r, name, path)
        elif re.fullmatch(r"decoder\d+\.\d+", name):
            dec_paths.append((name, path))
        elif re.fullmatch(r"region\d+", name):
            reg_paths.append((name, path))
    decoders = {n: read_decoder(r, n, p, ports) for n, p in dec_paths}
    regions = [read_region(r, n, p, decoders) for n, p in reg_paths]
    key = lambda name: [int(x) for x in re.findall(r"\d+", name)]  # noqa: E731
    return (
        tuple(sorted(memdevs, key=lambda m: key(m.memdev))),
        tuple(sorted(ports.values(), key=lambda p: (p.kind, key(p.port)))),
        tuple(sorted(decoders.values(), key=lambda d: key(d.decoder))),
        tuple(sorted(regions, key=lambda g: key(g.region))),
    )


def dax_kind(path: str) -> str:
    """The kind of a dax device by hwloc's rule on its real path: cxl-ram, cxl-pmem, nvdimm, hmem or unknown."""
    if "/ndbus" in path:
        return "cxl-pmem" if "nvdimm-bridge" in path else "nvdimm"
    if re.search(r"/region\d+/dax_region\d+/", path):
        return "cxl-ram"
    if "/hmem" in path:
        return "hmem"
    return "unknown"


def read_dax(r: Reader) -> list[DaxDevice]:
    """Every dax device: kind, region, range, target node and bound driver (memory block counts not yet filled)."""
    out = []
    for name, path in _devices(r, DAX):
        m = re.search(r"/(region\d+)/dax_region\d+/", path)
        out.append(
            DaxDevice(
                chardev=name,
                path=path,
                kind=dax_kind(path),
                region=m.group(1) if m else None,
                size=r.int(f"{path}/size"),
                resource=r.int(f"{path}/resource", required=False),
                align=r.int(f"{path}/align", required=False),
                target_node=r.int(f"{path}/target_node", required=False),
                numa_node=r.int(f"{path}/numa_node", required=False),
                driver=r.fs.link_name(f"{path}/driver"),
            )
        )
    return out


def with_blocks(dax: DaxDevice, blocks: tuple[MemoryBlock, ...], block_size: int | None) -> DaxDevice:
    """Fill daxctl's online_memblocks / total_memblocks / movable from the memory blocks in the device's range."""
    if dax.resource is None or not dax.size or not block_size:
        return dax
    lo, hi = dax.resource, dax.resource + dax.size
    first = -(-lo // block_size)  # blocks come sorted by index: take the slice in [lo, hi)
    start = bisect.bisect_left(blocks, first, key=lambda b: b.block)
    end = bisect.bisect_left(blocks, -(-hi // block_size), key=lambda b: b.block)
    mine = blocks[start:end]
    online = [b for b in mine if b.state == "online"]
    total = max(len(mine), dax.size // block_size) if dax.driver == "kmem" else dax.size // block_size
    movable = bool(online) and all((b.zone or "").split()[0:1] == ["Movable"] for b in online)
    return replace(dax, online_memblocks=len(online), total_memblocks=total, movable=movable if online else None)
