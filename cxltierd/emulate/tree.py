"""Scripted hotplug on an emulated host's sysfs tree (a private, writable copy of a fixture tree).

Removing node N does to the tree what the kernel does to sysfs when a CXL region's memory goes away: the node
directory and its bus link disappear, N leaves the node masks and its memory tier, and the dax device and CXL
region feeding it leave their buses. Adding it back restores all of that. Each change returns the udev-style
event lines ("node remove node2") that the daemon debounces into one re-discovery, as with real udev events.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from cxltierd.discovery.parse import parse_cpulist
from cxltierd.errors import RootError
from cxltierd.units import cpulist

NODE = "sys/devices/system/node"
MASKS = ("online", "has_memory", "has_normal_memory", "has_high_memory", "has_cpu")
STASH = ".cxltierd-hotplug"


def copy_tree(src: Path, dest: Path) -> Path:
    """A private copy of a host tree, symlinks kept as symlinks but never pointing out of the copy: an absolute
    link ("/sys/devices/x", which names a path of that host) is rewritten relative, into the copy, and a relative
    link that climbs out of the tree is dropped. Scripted hotplug then writes inside the copy only."""
    if not src.is_dir():
        raise RootError(f"{src}: host tree {'does not exist' if not src.exists() else 'is not a directory'}")
    try:
        shutil.copytree(src, dest, symlinks=True, ignore=_special_files)
    except (OSError, shutil.Error) as e:
        raise RootError(f"{src}: cannot copy the host tree ({_first_error(e)})") from None
    top = os.path.realpath(dest)
    for d, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(d, name)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            if os.path.isabs(target):
                inside = os.path.normpath(os.path.join(top, target.lstrip("/")))
                os.unlink(path)
                os.symlink(os.path.relpath(inside, d), path)
            elif os.path.relpath(os.path.normpath(os.path.join(d, target)), top).startswith(".."):
                os.unlink(path)
    return dest


def _special_files(directory: str, names: list[str]) -> list[str]:
    """Entries not copied: anything but regular files, directories and symlinks (a FIFO would block the copy)."""
    skip = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except OSError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skip.append(name)
    return skip


def _first_error(e: BaseException) -> str:
    """One line for an OSError or for shutil.Error's list of (src, dst, reason)."""
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        first = e.args[0][0]
        return f"{first[0]}: {first[2]}" + (f" and {len(e.args[0]) - 1} more" if len(e.args[0]) > 1 else "")
    if isinstance(e, OSError):
        return f"{e.filename}: {e.strerror}" if e.filename else str(e.strerror or e)
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _set_mask(path: Path, node: int, present: bool) -> None:
    if not path.is_file():
        return
    nodes = set(parse_cpulist(path.read_text()))
    nodes = nodes | {node} if present else nodes - {node}
    path.write_text(cpulist(tuple(sorted(nodes))) + "\n")


def _feeders(root: Path, node: int) -> list[tuple[str, str]]:
    """(bus dir, device name) of the dax devices whose target_node is `node`, and of their CXL regions."""
    out = []
    dax_bus = root / "sys/bus/dax/devices"
    for link in sorted(dax_bus.iterdir()) if dax_bus.is_dir() else []:
        target = link / "target_node"
        try:
            if int(target.read_text().strip()) != node:
                continue
        except (OSError, ValueError):
            continue
        out.append(("sys/bus/dax/devices", link.name))
        real = os.path.realpath(link)
        region = os.path.basename(os.path.dirname(os.path.dirname(real)))  # .../regionZ/dax_regionZ/daxZ.0
        if region.startswith("region") and (root / "sys/bus/cxl/devices" / region).is_symlink():
            out.append(("sys/bus/cxl/devices", region))
    return out


def _online(root: Path) -> list[int]:
    path = root / NODE / "online"
    return list(parse_cpulist(path.read_text())) if path.is_file() else []


def _row(path: Path, online: list[int]) -> dict[int, int] | None:
    """A node's distance file as {node: distance}, its entries following `online` (None if it does not fit)."""
    try:
        values = [int(v) for v in path.read_text().split()]
    except (OSError, ValueError):
        return None
    return dict(zip(online, values, strict=True)) if len(values) == len(online) else None


def _distances(root: Path) -> dict[int, dict[int, int]]:
    """The full distance matrix of the host, saved in the stash at the first hotplug (when every row is whole)."""
    path = root / STASH / "distance.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return {int(a): {int(b): d for b, d in row.items()} for a, row in saved.items()}
    online = _online(root)
    matrix = {n: row for n in online if (row := _row(root / NODE / f"node{n}" / "distance", online))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(matrix))
    return matrix


def _write_distances(root: Path, matrix: dict[int, dict[int, int]]) -> None:
    """As the kernel lists distances to online nodes only: every online node's row, for the nodes online now."""
    online = _online(root)
    for n in online:
        row = matrix.get(n, {})
        path = root / NODE / f"node{n}" / "distance"
        if path.is_file() and all(o in row for o in online):
            path.write_text(" ".join(str(row[o]) for o in online) + "\n")


def remove_node(root: Path, node: int) -> list[str]:
    """Take node `node` (and what feeds it) out of the tree; returns udev-style event lines."""
    nd = root / NODE / f"node{node}"
    if not nd.is_dir():
        return []
    stash = root / STASH / f"node{node}"
    stash.mkdir(parents=True, exist_ok=True)
    events = []
    for bus, name in _feeders(root, node):
        (stash / bus).mkdir(parents=True, exist_ok=True)
        os.replace(root / bus / name, stash / bus / name)
        events.append(f"{'dax' if '/dax/' in bus else 'cxl'} remove {name}")
    distances = _distances(root)
    os.replace(nd, stash / f"node{node}")
    bus_link = root / "sys/bus/node/devices" / f"node{node}"
    if bus_link.is_symlink():
        (stash / "sys/bus/node/devices").mkdir(parents=True, exist_ok=True)
        os.replace(bus_link, stash / "sys/bus/node/devices" / bus_link.name)
    for mask in MASKS:
        _set_mask(root / NODE / mask, node, present=False)
    _write_distances(root, distances)
    tiers = root / "sys/devices/virtual/memory_tiering"
    for t in sorted(tiers.glob("memory_tier*/nodelist")) if tiers.is_dir() else []:
        if node in parse_cpulist(t.read_text()):
            (stash / "tier").write_text(t.parent.name)
            _set_mask(t, node, present=False)
    events.append(f"node remove node{node}")
    return events


def add_node(root: Path, node: int) -> list[str]:
    """Put back a node taken out by remove_node(); returns udev-style event lines."""
    stash = root / STASH / f"node{node}"
    if not (stash / f"node{node}").is_dir():
        return []
    os.replace(stash / f"node{node}", root / NODE / f"node{node}")
    events = [f"node add node{node}"]
    for mask in ("online", "has_memory"):
        _set_mask(root / NODE / mask, node, present=True)
    _write_distances(root, _distances(root))
    if (stash / "tier").is_file():
        _set_mask(root / "sys/devices/virtual/memory_tiering" / (stash / "tier").read_text() / "nodelist", node, True)
    for bus in ("sys/bus/node/devices", "sys/bus/cxl/devices", "sys/bus/dax/devices"):
        for entry in sorted((stash / bus).iterdir()) if (stash / bus).is_dir() else []:
            os.replace(entry, root / bus / entry.name)
            if bus != "sys/bus/node/devices":
                events.append(f"{bus.split('/')[2]} add {entry.name}")
    shutil.rmtree(stash)
    return events


def apply_hotplug(root: Path, changes: list[tuple[str, int]]) -> list[str]:
    """Apply ("remove" | "add", node) changes in order, coalesced: only each node's last change is applied (a node
    removed and added back thousands of times between two ticks ends where it started and costs one check, not
    thousands of tree rewrites). Returns the udev-style event lines of what changed."""
    last: dict[int, str] = {}
    for action, node in changes:
        last.pop(node, None)  # keep the order of each node's last change
        last[node] = action
    events: list[str] = []
    for node, action in last.items():
        events += remove_node(root, node) if action == "remove" else add_node(root, node)
    return events
