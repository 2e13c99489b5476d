"""Discovery: read everything the kernel says about memory into HostFacts. Never raises for one bad attribute.

Read (through HostFS) -> parse (pure functions in parse.py) -> frozen facts. Each missing, unreadable or malformed
attribute becomes one warning naming the file, and that value or device is skipped.
"""

from __future__ import annotations

from dataclasses import replace

from cxltierd.discovery import cxl, kernel, nodes
from cxltierd.discovery.kernel import read_vmstat
from cxltierd.discovery.reader import Reader
from cxltierd.facts import HostFacts, KernelFacts
from cxltierd.hostfs import HostFS

__all__ = ["discover", "read_vmstat"]


def discover(fs: HostFS) -> HostFacts:
    """All memory facts of the host under fs.root. Raises RootError only when the root is not a sysfs tree."""
    fs.check_root()
    r = Reader(fs)
    masks = nodes.read_masks(r)
    node_facts = nodes.read_nodes(r, masks["online"])
    memdevs, ports, decoders, regions = cxl.read_cxl(r)
    dax = cxl.read_dax(r)
    block_size = r.int(f"{nodes.MEMORY}/block_size_bytes", required=fs.is_dir(nodes.MEMORY), base=16)
    ranges = [(g.resource, g.resource + g.size) for g in regions if g.resource is not None and g.size]
    ranges += [(d.resource, d.resource + d.size) for d in dax if d.resource is not None and d.size]
    kmem = [
        (d.resource, d.resource + d.size, d.target_node)
        for d in dax
        if d.driver == "kmem" and d.resource is not None and d.size and d.target_node is not None
    ]
    blocks = nodes.read_blocks(r, node_facts, block_size, ranges, kmem)
    dax = [cxl.with_blocks(d, blocks, block_size) for d in dax]
    release, version = kernel.read_release(r)
    knobs = KernelFacts(
        release=release,
        version=version,
        numa_balancing=r.int("/proc/sys/kernel/numa_balancing", required=False),
        promote_rate_limit_mbps=r.int("/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps", required=False),
        demotion_enabled=kernel.read_demotion(r),
        damon=kernel.read_damon(r),
        cxl_bus=fs.is_dir("/sys/bus/cxl"),
        cxl_drivers=tuple(fs.listdir("/sys/bus/cxl/drivers")),
        dax_drivers=tuple(fs.listdir("/sys/bus/dax/drivers")),
        block_size_bytes=block_size,
        auto_online_blocks=r.text(f"{nodes.MEMORY}/auto_online_blocks", required=False),
        memory_tiers=nodes.read_memory_tiers(r),
        vmstat=read_vmstat(fs),
    )
    facts = HostFacts(
        root=str(fs.root),
        online=masks["online"],
        possible=masks["possible"],
        has_cpu=masks["has_cpu"],
        has_memory=masks["has_memory"],
        nodes=node_facts,
        memdevs=memdevs,
        ports=ports,
        decoders=decoders,
        regions=regions,
        dax=tuple(sorted(dax, key=lambda d: d.chardev)),
        blocks=blocks,
        gpus=kernel.read_gpus(r),
        kernel=knobs,
    )
    return replace(facts, warnings=tuple(r.warnings))
