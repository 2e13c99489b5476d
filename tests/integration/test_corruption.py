"""Random corruption of fixture hosts' attribute files: discovery never raises nor blocks (FIFOs), never reads
through a link out of the root, output stays valid JSON, and devices whose own files were not touched are
reported exactly as before."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxltierd.discovery import discover
from cxltierd.hostfs import HostFS
from cxltierd.report.host import status_text, topology_json, topology_text
from cxltierd.topology import classify

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("qemu-cxl-node4", "interleaved-cxl", "two-socket-cxl")


def attribute_files(root: Path) -> list[str]:
    """Files discovery reads: CXL and dax device attributes, node files, a few memory blocks, /proc knobs."""
    out: list[str] = []
    for bus in ("sys/bus/cxl/devices", "sys/bus/dax/devices"):
        for link in sorted((root / bus).iterdir()):
            real = Path(os.path.realpath(link))
            for f in sorted(real.rglob("*")):
                if (f.is_file() or f.is_symlink()) and "firmware" not in f.parts and "power" not in f.parts:
                    out.append(os.path.relpath(f, root))
    for f in sorted((root / "sys/devices/system/node").rglob("*")):
        if f.is_file() and not f.is_symlink() and "power" not in f.parts:
            out.append(os.path.relpath(f, root))
    blocks = sorted((root / "sys/devices/system/memory").glob("memory*/state"))
    out += [os.path.relpath(b, root) for b in blocks[:: max(1, len(blocks) // 8)]]
    out += [
        "sys/devices/system/memory/block_size_bytes",
        "proc/vmstat",
        "proc/version",
        "proc/sys/kernel/numa_balancing",
    ]
    out += [os.path.relpath(p, root) for p in (root / "sys/devices/virtual/memory_tiering").glob("*/nodelist")]
    return sorted({p for p in out if (root / p).exists() or (root / p).is_symlink()})


CORRUPTIONS = ("truncate", "garbage", "huge", "empty", "missing", "dangling", "binary", "directory", "fifo", "outside")
MARKER = "SECRET-OUTSIDE-THE-ROOT"
OUTSIDE: list[Path] = []  # a file outside every root, holding MARKER (made by the hosts fixture)


def corrupt(path: Path, how: str) -> None:
    text = path.read_bytes() if path.is_file() else b""
    if path.is_symlink() or path.is_file() or path.is_fifo():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    if how == "truncate":
        path.write_bytes(text[: len(text) // 2])
    elif how == "garbage":
        path.write_text("zz!@# not a value\n")
    elif how == "huge":
        path.write_text("9" * 400 + "\n")
    elif how == "empty":
        path.write_text("")
    elif how == "dangling":
        os.symlink("../../nowhere/at/all", path)
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00\x01" * 16)
    elif how == "directory":
        path.mkdir()
    elif how == "fifo":  # must be refused, not waited on
        os.mkfifo(path)
    elif how == "outside":  # must not be read: it is not the host's
        os.symlink(OUTSIDE[0], path)


def snapshot(root: Path) -> dict:
    facts = discover(HostFS(root))
    topo = classify(facts)
    doc = topology_json(facts, topo)
    assert MARKER not in json.dumps(doc)  # must serialise, and hold nothing read from outside the root
    topology_text(facts, topo)  # and render as text (float formatting of sizes)
    status_text(facts, topo)
    return doc


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    OUTSIDE[:] = [tmp_path_factory.mktemp("outside") / "secret"]
    OUTSIDE[0].write_text(f"{MARKER}\n")
    out = {}
    for name in HOSTS:
        root = tmp_path_factory.mktemp(name) / "root"
        shutil.copytree(REPO / "fixtures" / "hosts" / name, root, symlinks=True)
        out[name] = (root, attribute_files(root), snapshot(root))
    return out


def owner(path: str, root: Path) -> str:
    """Where a corrupted file lives: the real path of its directory plus its own name (links not followed)."""
    return os.path.join(os.path.realpath((root / path).parent), os.path.basename(path))


def affects(dev_name: str, touched: list[str]) -> bool:
    """A device is affected by files in its own directory; a decoder also by its port's (uport, ...)."""
    dirs = [f"/{dev_name}/"]
    if dev_name.startswith("decoder"):
        port = dev_name[len("decoder") :].split(".")[0]
        dirs += [f"/root{port}/", f"/port{port}/", f"/endpoint{port}/"]
    return any(d in t for t in touched for d in dirs) or any(t.endswith(f"/{dev_name}") for t in touched)


def by(items: list[dict], key: str) -> dict:
    return {i[key]: i for i in items}


@settings(max_examples=80, print_blob=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_attributes_never_break_discovery(hosts, data):
    name = data.draw(st.sampled_from(HOSTS))
    root, files, baseline = hosts[name]
    picks = data.draw(st.lists(st.sampled_from(files), min_size=1, max_size=4, unique=True))
    hows = [data.draw(st.sampled_from(CORRUPTIONS)) for _ in picks]
    saved = {}
    for p in picks:
        f = root / p
        saved[p] = ("link", os.readlink(f)) if f.is_symlink() else ("file", f.read_bytes())
    touched = [owner(p, root) for p in picks]
    try:
        for p, how in zip(picks, hows, strict=True):
            corrupt(root / p, how)
        doc = snapshot(root)  # never raises
        # devices whose directories hold none of the corrupted files are reported exactly as before
        for kind, key in (("memdevs", "memdev"), ("decoders", "decoder")):
            now = by(doc["cxl"][kind], key)
            for dev_name, entry in by(baseline["cxl"][kind], key).items():
                if not affects(dev_name, touched):
                    assert now.get(dev_name) == entry, (dev_name, picks, hows)
        now_nodes = by(doc["nodes"], "node")
        masks_touched = any("/node/" not in p or p.rsplit("/", 1)[-1] in ("online", "possible") for p in picks)
        for n, entry in by(baseline["nodes"], "node").items():
            if any(f"/node/node{n}/" in p for p in picks) or masks_touched:
                continue
            got = now_nodes.get(n)
            assert got is not None, (n, picks, hows)
            for field in ("cpus", "total_bytes", "free_bytes", "distances", "hmat"):
                assert got[field] == entry[field], (n, field, picks, hows)
    finally:
        for p, (kind, value) in saved.items():
            f = root / p
            if f.is_symlink() or f.is_file() or f.is_fifo():
                f.unlink()
            elif f.is_dir():
                shutil.rmtree(f)
            if kind == "link":
                os.symlink(value, f)
            else:
                f.write_bytes(value)
    assert snapshot(root) == baseline  # restored


def test_unreadable_root_attributes_are_warnings_not_errors(hosts):
    root, _, _ = hosts["qemu-cxl-node4"]
    region = root / "sys/bus/cxl/devices/region0"
    size = Path(os.path.realpath(region)) / "size"
    text = size.read_text()
    try:
        size.write_text("0xZZZ\n")
        facts = discover(HostFS(root))
        assert any(
            w.endswith("size: malformed value '0xZZZ' (invalid literal for int() with base 0: '0xZZZ')")
            for w in facts.warnings
        )
        assert len(facts.warnings) == 1
        assert facts.regions[0].size is None and facts.memdevs[0].memdev == "mem0"
    finally:
        size.write_text(text)


def test_a_truncated_has_memory_mask_hides_no_node(hosts):
    """Found by the corruption test: has_memory "0-2,4" cut to "0-2" still parses; node 4's meminfo keeps it listed."""
    root, _, baseline = hosts["qemu-cxl-node4"]
    mask = root / "sys/devices/system/node/has_memory"
    text = mask.read_text()
    try:
        mask.write_text("0-2\n")
        doc = snapshot(root)
        assert by(doc["nodes"], "node")[4] == by(baseline["nodes"], "node")[4]
        assert doc["tiers"] == baseline["tiers"]
    finally:
        mask.write_text(text)
