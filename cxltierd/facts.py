"""Raw facts about a host's memory, as the kernel reports them. Frozen dataclasses, no I/O, no judgement.

Field names follow `cxl list` / `daxctl list` where the objects are the same. Sizes are bytes, latencies ns,
bandwidths MB/s, as sysfs gives them. A value the kernel did not provide (or that could not be read) is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class Access:
    """Access performance from an initiator class: node HMAT (accessN/initiators) or CXL region accessN."""

    read_latency: int | None = None
    write_latency: int | None = None
    read_bandwidth: int | None = None
    write_bandwidth: int | None = None
    initiators: tuple[int, ...] = ()


@dataclass(frozen=True)
class MemSideCache:
    """A memory-side cache in front of a node (nodeN/memory_side_cache/indexY), as HMAT describes it."""

    index: int
    size: int | None = None
    line_size: int | None = None
    indexing: int | None = None
    write_policy: int | None = None


@dataclass(frozen=True)
class NodeFacts:
    """One NUMA node as sysfs shows it: CPUs, meminfo totals, distances, HMAT access classes, caches, memory blocks."""

    node: int
    cpus: tuple[int, ...] = ()
    total_bytes: int | None = None
    free_bytes: int | None = None
    used_bytes: int | None = None
    distances: dict[int, int] = field(default_factory=dict, hash=False)
    access0: Access | None = None
    access1: Access | None = None
    caches: tuple[MemSideCache, ...] = ()
    blocks: tuple[int, ...] = ()  # memory block indexes linked from nodeN/memoryX


@dataclass(frozen=True)
class Memdev:
    """A CXL memory device (memN) on the CXL bus."""

    memdev: str
    path: str  # kernel path of the device directory
    host: str | None = None  # parent device (PCI function) of the memdev
    ram_size: int | None = None
    pmem_size: int | None = None
    serial: int | None = None
    numa_node: int | None = None  # node of the host bridge, not where the memory lands
    firmware_version: str | None = None
    ram_qos_class: int | None = None
    security_state: str | None = None
    enabled: bool = False  # bound to cxl_mem
    pmem_qos_class: int | None = None


@dataclass(frozen=True)
class Decoder:
    """A CXL HDM decoder (decoderX.Y) of a root, switch or endpoint port."""

    decoder: str
    kind: str  # root | switch | endpoint
    port: str  # owning port device name (root0, port1, endpoint2)
    start: int | None = None
    size: int | None = None
    interleave_ways: int | None = None
    interleave_granularity: int | None = None
    target_list: tuple[int, ...] = ()
    mode: str | None = None  # endpoint decoders: ram|pmem|mixed|none
    dpa_resource: int | None = None
    dpa_size: int | None = None
    region: str | None = None
    locked: bool | None = None
    target_type: str | None = None
    capabilities: tuple[str, ...] = ()  # root decoders: ram, pmem, type2, type3
    memdev: str | None = None  # endpoint decoders: the memdev behind the endpoint
    qos_class: int | None = None  # root decoders: the QoS class of the window


@dataclass(frozen=True)
class Port:
    """A CXL port on the bus: the root, a switch or host-bridge port, or an endpoint."""

    port: str
    kind: str  # root | port | endpoint
    path: str
    host: str | None = None  # uport's device name
    enabled: bool = False  # bound to cxl_port (a root port has no driver)


@dataclass(frozen=True)
class Mapping:
    """One interleave position of a region: the endpoint decoder there and its memdev."""

    position: int
    decoder: str
    memdev: str | None


@dataclass(frozen=True)
class Region:
    """A CXL region (regionN): a host physical range interleaved over memdevs, with its dax region when it has one."""

    region: str
    path: str
    mode: str | None = None  # ram | pmem
    size: int | None = None
    resource: int | None = None
    interleave_ways: int | None = None
    interleave_granularity: int | None = None
    uuid: str | None = None
    decode_state: str | None = None  # commit | reset
    enabled: bool = False  # a driver is bound
    mappings: tuple[Mapping, ...] = ()
    dax_region: str | None = None
    access0: Access | None = None
    access1: Access | None = None


@dataclass(frozen=True)
class DaxDevice:
    """A dax device (daxX.Y); bound to kmem, its memory is onlined as `target_node`. Memory block counts as daxctl's."""

    chardev: str
    path: str
    kind: str  # cxl-ram | cxl-pmem | hmem | nvdimm | unknown (hwloc's rule on the device path)
    region: str | None = None  # CXL region above it
    size: int | None = None
    resource: int | None = None
    align: int | None = None
    target_node: int | None = None
    numa_node: int | None = None
    driver: str | None = None  # kmem | device_dax | None
    online_memblocks: int = 0
    total_memblocks: int = 0
    movable: bool | None = None

    @property
    def mode(self) -> str | None:
        """The mode as daxctl names it: system-ram (kmem), devdax (device_dax), or None when unbound."""
        return {"kmem": "system-ram", "device_dax": "devdax"}.get(self.driver or "")


class MemoryBlock(NamedTuple):
    """A memory block (a NamedTuple: hosts have tens of thousands of them, and this is cheap to build)."""

    block: int  # X of memoryX: the block covers [X * block_size, (X + 1) * block_size)
    node: int | None
    state: str | None = None  # online | offline | going-offline (read for blocks of CXL ranges)
    zone: str | None = None  # valid_zones of an online block: Normal, Movable, DMA32, none


@dataclass(frozen=True)
class GpuNode:
    """A GPU whose memory is a NUMA node (/proc/driver/nvidia/gpus/BDF/numa_status)."""

    bdf: str
    node: int
    status: str | None = None


@dataclass(frozen=True)
class Damon:
    """The DAMON sysfs interface: whether it exists, how many kdamonds it has, and which run."""

    sysfs: bool = False  # /sys/kernel/mm/damon/admin exists
    nr_kdamonds: int = 0
    running: tuple[int, ...] = ()  # indexes of kdamonds whose state is "on"
    stat: bool | None = None  # the kernel's DAMON_STAT module enabled (None: no such module parameter)


@dataclass(frozen=True)
class KernelFacts:
    """Kernel version and tiering-related settings: NUMA balancing, demotion, DAMON, CXL/dax drivers, memory tiers."""

    release: str | None = None  # "6.12.95+deb12-amd64"
    version: tuple[int, int] | None = None
    numa_balancing: int | None = None
    promote_rate_limit_mbps: int | None = None
    demotion_enabled: bool | None = None
    damon: Damon = Damon()
    cxl_bus: bool = False
    cxl_drivers: tuple[str, ...] = ()
    dax_drivers: tuple[str, ...] = ()
    block_size_bytes: int | None = None
    auto_online_blocks: str | None = None
    memory_tiers: dict[int, tuple[int, ...]] = field(default_factory=dict, hash=False)  # tier N -> nodes
    vmstat: dict[str, int] = field(default_factory=dict, hash=False)  # tiering-related counters only


@dataclass(frozen=True)
class HostFacts:
    """Everything discovery read about a host's memory under `root`, plus one warning per attribute it had to skip."""

    root: str
    online: tuple[int, ...] = ()
    possible: tuple[int, ...] = ()
    has_cpu: tuple[int, ...] = ()
    has_memory: tuple[int, ...] = ()
    nodes: tuple[NodeFacts, ...] = ()
    memdevs: tuple[Memdev, ...] = ()
    ports: tuple[Port, ...] = ()
    decoders: tuple[Decoder, ...] = ()
    regions: tuple[Region, ...] = ()
    dax: tuple[DaxDevice, ...] = ()
    blocks: tuple[MemoryBlock, ...] = ()
    gpus: tuple[GpuNode, ...] = ()
    kernel: KernelFacts = KernelFacts()
    warnings: tuple[str, ...] = ()

    def node(self, n: int) -> NodeFacts | None:
        """The facts of node n, or None."""
        return next((x for x in self.nodes if x.node == n), None)

    def region_dax(self, region: str) -> tuple[DaxDevice, ...]:
        """The dax devices carved out of a region."""
        return tuple(d for d in self.dax if d.region == region)

    def region_node(self, region: str) -> int | None:
        """The NUMA node a region's memory is onlined as (through its kmem dax device), or None."""
        return next((d.target_node for d in self.region_dax(region) if d.target_node is not None), None)
