"""cgroup v2 memory per NUMA node: `memory.numa_stat` (parsed here, pure) and the cgroups below a path.

memory.numa_stat has one line per item, "anon N0=4096 N1=0", in bytes and hierarchical (a cgroup's figures include
its descendants'). A tenant's memory on a node is its anon plus file bytes there.
"""

from __future__ import annotations

from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS

CGROUP_ROOT = "/sys/fs/cgroup"
MAX_CGROUPS = 256  # cgroups_under stops after this many (a filter per cgroup: bounded)
MAX_DEPTH = 8


def parse_numa_stat(text: str) -> dict[str, dict[int, int]]:
    """Per item, {node: bytes}; malformed lines and fields are skipped."""
    out: dict[str, dict[int, int]] = {}
    for line in text.splitlines():
        item, *fields = line.split()
        per: dict[int, int] = {}
        for f in fields:
            key, _, value = f.partition("=")
            if key[:1] == "N" and key[1:].isdigit() and value.isdigit():
                per[int(key[1:])] = int(value)
        if fields and per:
            out[item] = per
    return out


def memory_by_node(stat: dict[str, dict[int, int]]) -> dict[int, int]:
    """Anon + file bytes per node, from a parsed numa_stat."""
    out: dict[int, int] = {}
    for item in ("anon", "file"):
        for node, b in stat.get(item, {}).items():
            out[node] = out.get(node, 0) + b
    return out


def read_numa_stat(fs: HostFS, cgroup: str) -> dict[int, int] | None:
    """Anon + file bytes per node of a cgroup (path below the cgroup2 mount, "/ai.slice"); None when unreadable."""
    path = f"{CGROUP_ROOT}/{cgroup.strip('/')}/memory.numa_stat".replace("//", "/")
    try:
        text = fs.read_optional(path)
    except HostFSError:
        return None
    return None if text is None else memory_by_node(parse_numa_stat(text))


def cgroups_under(fs: HostFS, prefix: str) -> list[str]:
    """The cgroup `prefix` and every cgroup below it that exists, breadth first, at most MAX_CGROUPS of them."""
    top = "/" + prefix.strip("/")
    base = CGROUP_ROOT + ("" if top == "/" else top)
    if not fs.is_dir(base):
        return []
    out, queue = [top], [(top, 0)]
    while queue and len(out) < MAX_CGROUPS:
        path, depth = queue.pop(0)
        if depth >= MAX_DEPTH:
            continue
        here = CGROUP_ROOT + ("" if path == "/" else path)
        for name in fs.listdir(here):
            child = path.rstrip("/") + "/" + name
            if fs.is_dir(CGROUP_ROOT + child) and len(out) < MAX_CGROUPS:
                out.append(child)
                queue.append((child, depth + 1))
    return out
