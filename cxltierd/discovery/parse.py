"""Pure parsers for kernel attribute text. Each raises ValueError on malformed input."""

from __future__ import annotations

import re
from dataclasses import dataclass

# vmstat counters that tell what tiering did (LINUX-INTERFACES.md); absent ones are simply missing.
TIERING_COUNTERS: tuple[str, ...] = (
    "pgpromote_success",
    "pgpromote_candidate",
    "pgdemote_kswapd",
    "pgdemote_direct",
    "pgdemote_khugepaged",
    "pgdemote_proactive",
    "numa_pte_updates",
    "numa_hint_faults",
    "numa_hint_faults_local",
    "numa_pages_migrated",
    "pgmigrate_success",
    "pgmigrate_fail",
    "thp_migration_success",
    "thp_migration_fail",
    "thp_migration_split",
)


def parse_cpulist(text: str) -> tuple[int, ...]:
    """ "0-3,8" -> (0, 1, 2, 3, 8); "" -> ()."""
    out: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a = int(lo, 10)
        b = int(hi, 10) if sep else a
        if a < 0 or b < a or b - a > 1 << 16:
            raise ValueError(f"bad range {part!r}")
        out.extend(range(a, b + 1))
    return tuple(out)


def parse_int(text: str, base: int = 0) -> int:
    """An integer attribute: decimal, or hex with 0x (base 0); base 16 for hex without 0x. Kernel attributes are
    64-bit: anything wider is malformed (and would overflow float arithmetic downstream)."""
    value = int(text.strip(), base)
    if not -(1 << 63) <= value < (1 << 64):
        raise ValueError("wider than 64 bits")
    return value


def parse_meminfo(text: str) -> dict[str, int]:
    """Node meminfo ("Node 0 MemTotal:  24684096 kB") or /proc/meminfo -> name -> bytes (or count)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, rest = line.partition(":")
        name = key.split()[-1] if key.split() else ""
        fields = rest.split()
        if not name or not fields:
            continue
        value = parse_int(fields[0], 10)
        if len(fields) > 1 and fields[1] == "kB":
            value *= 1024
        out[name] = value
    if not out:
        raise ValueError("no 'Name: value' lines")
    return out


def parse_distance(text: str, online: tuple[int, ...]) -> dict[int, int]:
    """A node's distance row; entries follow the order of the online nodes."""
    values = [parse_int(v, 10) for v in text.split()]
    if len(values) != len(online):
        raise ValueError(f"{len(values)} distances for {len(online)} online nodes")
    return dict(zip(online, values, strict=True))


def parse_keyvals(text: str) -> dict[str, int]:
    """/proc/vmstat and nodeN/vmstat lines: "name value"."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parse_int(parts[1], 10)
    return out


def parse_kernel_release(version_text: str) -> tuple[str, tuple[int, int]]:
    """/proc/version -> ("6.12.95+deb12-amd64", (6, 12))."""
    m = re.match(r"Linux version (\S+)", version_text)
    if not m:
        raise ValueError("no 'Linux version X' at the start")
    release = m.group(1)
    v = re.match(r"(\d+)\.(\d+)", release)
    if not v:
        raise ValueError(f"release {release!r} has no major.minor")
    return release, (int(v.group(1)), int(v.group(2)))


def parse_bool(text: str) -> bool:
    """A sysfs boolean: true/false, 1/0, y/n, yes/no, on/off (any case)."""
    t = text.strip().lower()
    if t in ("true", "1", "y", "yes", "on"):
        return True
    if t in ("false", "0", "n", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text[:20]!r}")


def parse_int_list(text: str) -> tuple[int, ...]:
    """A decoder target_list: "12" or "0,1"; empty -> ()."""
    return tuple(parse_int(x, 10) for x in re.split(r"[,\s]+", text.strip()) if x)


def parse_nvidia_numa_status(text: str) -> tuple[int, str | None]:
    """/proc/driver/nvidia/gpus/BDF/numa_status: "Node: 2" and "Status: online" lines."""
    node: int | None = None
    status: str | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "node":
            node = parse_int(value, 10)
        elif key.strip().lower() == "status":
            status = value.strip()
    if node is None:
        raise ValueError("no 'Node:' line")
    return node, status


def index_of(name: str, prefix: str) -> int | None:
    """ "memory110" with prefix "memory" -> 110; None if the name does not match."""
    if name.startswith(prefix):
        rest = name[len(prefix) :]
        if rest.isdigit():
            return int(rest)
    return None


def parse_zoneinfo(text: str) -> dict[int, dict[str, tuple[int, int]]]:
    """/proc/zoneinfo -> node -> zone name -> (present, managed) pages ("Node 4, zone  Movable" ... "present
    131072" ... "managed  131072"). Present pages are the zone's online memory."""
    out: dict[int, dict[str, tuple[int, int]]] = {}
    zone: dict[str, tuple[int, int]] | None = None
    name = ""
    for line in text.splitlines():
        if line.startswith("Node "):
            head, _, rest = line.partition(", zone")
            words = head.split()
            if len(words) != 2:
                raise ValueError(f"bad zone header {line[:40]!r}")
            node = int(words[1])
            name = rest.strip()
            zone = out.setdefault(node, {})
            zone[name] = (0, 0)
        elif zone is not None:
            words = line.split()
            if len(words) == 2 and words[0] == "present":
                zone[name] = (parse_int(words[1], 10), zone[name][1])
            elif len(words) == 2 and words[0] == "managed":
                zone[name] = (zone[name][0], parse_int(words[1], 10))
    if not out:
        raise ValueError("no 'Node N, zone Z' lines")
    return out


@dataclass(frozen=True)
class Watermarks:
    """A node's zone watermarks summed over its zones, in pages: `low`, the low watermarks (what si_mem_available
    keeps of page cache and reclaimable slab), and `reserve`, per zone the high watermark plus its largest lowmem
    protection, capped at the zone's managed pages (the kernel's totalreserve_pages). `managed` is the node's
    managed pages: with MemTotal it gives the page size."""

    low: int = 0
    reserve: int = 0
    managed: int = 0


def parse_watermarks(text: str) -> dict[int, Watermarks]:
    """/proc/zoneinfo -> node -> Watermarks, from each zone's "low", "high", "managed" and "protection: (a, b, ..)"
    lines (calculate_totalreserve_pages and si_mem_available in the kernel). Lines of per-node stats and per-CPU
    page sets are skipped; a zone without watermark lines counts 0."""
    out: dict[int, Watermarks] = {}
    zones: list[list[int]] = []  # per zone of the current node: [low, high, managed, max protection]
    node: int | None = None

    def close() -> None:
        if node is not None:
            out[node] = Watermarks(
                low=sum(z[0] for z in zones),
                reserve=sum(min(z[1] + z[3], z[2]) for z in zones),
                managed=sum(z[2] for z in zones),
            )

    slot = {"low": 0, "high": 1, "managed": 2}
    for line in text.splitlines():
        if line.startswith("Node "):
            words = line.partition(",")[0].split()
            if len(words) != 2:
                raise ValueError(f"bad zone header {line[:40]!r}")
            n = parse_int(words[1], 10)
            if n != node:
                close()
                node, zones = n, []
            zones.append([0, 0, 0, 0])
            continue
        if not zones:
            continue
        words = line.split()
        if len(words) == 2 and words[0] in slot:
            zones[-1][slot[words[0]]] = parse_int(words[1], 10)
        elif words and words[0] == "protection:":
            values = [parse_int(v, 10) for v in line.partition("(")[2].rstrip(") \t").split(",") if v.strip()]
            zones[-1][3] = max(values, default=0)
    close()
    if not out:
        raise ValueError("no 'Node N, zone Z' lines")
    return out


def available_bytes(meminfo: dict[str, int], marks: Watermarks | None, page_size: int) -> int | None:
    """Memory of a node the kernel can hand out without costly reclaim, si_mem_available (mm/show_mem.c) per node:
    MemFree minus the reserve, plus page cache (Active(file) + Inactive(file)) less min(half of it, the low
    watermarks), plus reclaimable kernel memory (KReclaimable, else SReclaimable) less the same. Never below 0.
    None without MemFree. Without watermarks (`marks` None) nothing is held back; absent file or slab lines count 0.
    """
    if "MemFree" not in meminfo:
        return None
    low = marks.low * page_size if marks else 0
    reserve = marks.reserve * page_size if marks else 0
    cache = meminfo.get("Active(file)", 0) + meminfo.get("Inactive(file)", 0)
    slab = meminfo.get("KReclaimable", meminfo.get("SReclaimable", 0))
    room = meminfo["MemFree"] - reserve
    room += cache - min(cache // 2, low)
    room += slab - min(slab // 2, low)
    return max(0, room)


def page_size_of(total_bytes: int, managed_pages: int) -> int:
    """The host's page size (4, 16 or 64 KiB) as a node's MemTotal over its managed pages shows it (zoneinfo counts
    pages, meminfo bytes, and a --root tree may come from an arm64 64K host); 4096 when managed is 0."""
    if managed_pages <= 0:
        return 4096
    ratio = total_bytes / managed_pages
    return min((4096, 16384, 65536), key=lambda p: abs(p - ratio))


def indexes(names: list[str], prefix: str) -> list[int]:
    """All N of entries named prefix + N ("memory110"), sorted; one pass for directories of thousands."""
    n = len(prefix)
    return sorted(int(e[n:]) for e in names if e.startswith(prefix) and e[n:].isdigit())


def parse_status(text: str) -> tuple[str, int | None]:
    """Name and VmRSS (bytes; None for kernel threads) from /proc/PID/status."""
    name, rss = "", None
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
        elif line.startswith("VmRSS:"):
            parts = line.split()
            rss = int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
    return name, rss


def parse_cgroup(text: str) -> str:
    """The cgroup v2 path ("0::/system.slice/x.service"); "/" when there is none."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return "/"
