"""--root trees planted with symlinks out of the tree and FIFOs: reads and writes stay beneath the root, nothing
blocks, and the emulated backend's private copy has no link out of itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxltierd.discovery import discover
from cxltierd.emulate.tree import add_node, apply_hotplug, copy_tree, remove_node
from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS

HOSTS = Path(__file__).resolve().parents[2] / "fixtures" / "hosts"
FIRMWARE = "sys/devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem0/firmware_version"


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(HOSTS / "two-socket-cxl", root, symlinks=True)
    secret = tmp_path / "secret"
    secret.write_text("root-only secret\n")
    return root, secret


def test_reads_do_not_follow_symlinks_out_of_the_root(host):
    root, secret = host
    (root / FIRMWARE).unlink()
    os.symlink(secret, root / FIRMWARE)
    with pytest.raises(HostFSError, match="firmware_version: resolves outside the root"):
        HostFS(root).read("/" + FIRMWARE)
    os.unlink(root / FIRMWARE)
    os.symlink(os.path.relpath(secret, (root / FIRMWARE).parent), root / FIRMWARE)  # ../../.. out of the tree
    with pytest.raises(HostFSError, match="resolves outside the root"):
        HostFS(root).read("/" + FIRMWARE)
    result = subprocess.run(
        [sys.executable, "-m", "cxltierd", "topology", "--root", str(root), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "secret" not in result.stdout, result.stderr
    assert json.loads(result.stdout)["cxl"]


def test_directories_linked_out_of_the_root_are_not_listed(host, tmp_path):
    root, _ = host
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private-name").write_text("x")
    os.symlink(outside, root / "sys/bus/cxl/devices/planted")
    assert HostFS(root).listdir("/sys/bus/cxl/devices/planted") == []
    assert HostFS("/").listdir(str(outside)) == ["private-name"]  # the real root is not confined


def test_writes_do_not_follow_symlinks_out_of_the_root(host):
    root, secret = host
    target = root / "sys/kernel/mm/numa/demotion_enabled"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    os.symlink(secret, target)
    with pytest.raises(HostFSError, match="resolves outside the root"):
        HostFS(root).write("/sys/kernel/mm/numa/demotion_enabled", "true")
    assert secret.read_text() == "root-only secret\n"


def test_a_fifo_attribute_is_refused_at_once(host):
    root, _ = host
    (root / FIRMWARE).unlink()
    os.mkfifo(root / FIRMWARE)
    started = time.monotonic()
    with pytest.raises(HostFSError, match="firmware_version: not a regular file"):
        HostFS(root).read("/" + FIRMWARE)
    with pytest.raises(HostFSError, match=r"write 'x' failed \(No such device or address\)"):
        HostFS(root).write("/" + FIRMWARE, "x")  # nobody reads the FIFO: refused at open, no wait
    assert time.monotonic() - started < 1
    for command in ("topology", "doctor"):
        result = subprocess.run(
            [sys.executable, "-m", "cxltierd", command, "--root", str(root)], capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in result.stderr and result.returncode in (0, 1, 2), (command, result.stderr)


def test_the_emulated_copy_has_no_link_out_of_itself(host, tmp_path):
    root, secret = host
    node_masks = root / "sys/devices/system/node"
    (node_masks / "has_cpu").unlink()
    os.symlink(secret, node_masks / "has_cpu")  # absolute: a path of the host the tree came from
    os.symlink("../../../../../secret", node_masks / "escape")
    os.symlink("/sys/devices/system/node/node0", root / "sys/bus/node/devices/absolute0")
    copy = copy_tree(root, tmp_path / "copy")
    links = [Path(d) / n for d, ds, fs in os.walk(copy) for n in ds + fs if (Path(d) / n).is_symlink()]
    real = os.path.realpath(copy)
    assert links and all(not os.readlink(p).startswith("/") for p in links)
    assert all(os.path.realpath(p).startswith(real + "/") for p in links)
    assert not (copy / "sys/devices/system/node/escape").is_symlink()
    assert os.path.realpath(copy / "sys/bus/node/devices/absolute0") == os.path.realpath(
        copy / "sys/devices/system/node/node0"
    )
    assert remove_node(copy, 2)  # scripted hotplug rewrites the masks: inside the copy only
    assert secret.read_text() == "root-only secret\n"


def run_once(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cxltierd", "run", "--once", "--listen", "off", "--socket", "off", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_emulated_root_that_is_missing_a_file_or_holds_a_fifo_gives_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    for root, expected in (
        (tmp_path / "missing", f"cxltierd: error: {tmp_path / 'missing'}: host tree does not exist\n"),
        (tmp_path / "file", f"cxltierd: error: {tmp_path / 'file'}: host tree is not a directory\n"),
    ):
        result = run_once("--backend", "emulated", "--root", str(root))
        assert result.returncode == 2 and result.stderr.endswith(expected), result.stderr
        assert "Traceback" not in result.stderr


def test_copying_a_tree_skips_fifos(host, tmp_path):
    root, _ = host
    os.mkfifo(root / "sys/planted-fifo")
    started = time.monotonic()
    copy = copy_tree(root, tmp_path / "copy")
    assert time.monotonic() - started < 30
    assert not (copy / "sys/planted-fifo").exists() and (copy / FIRMWARE).is_file()


def test_hotplug_keeps_distance_rows_to_the_online_nodes(tmp_path):
    root = copy_tree(HOSTS / "two-socket-cxl", tmp_path / "copy")
    full = {0: {0: 10, 1: 21, 2: 24}, 1: {0: 21, 1: 10, 2: 24}, 2: {0: 24, 1: 24, 2: 10}}

    def distances() -> dict[int, dict[int, int]]:
        facts = discover(HostFS(root))
        assert not facts.warnings
        return {n.node: n.distances for n in facts.nodes}

    assert distances() == full
    remove_node(root, 1)
    assert distances() == {0: {0: 10, 2: 24}, 2: {0: 24, 2: 10}}
    remove_node(root, 2)
    assert distances() == {0: {0: 10}}
    add_node(root, 1)
    assert distances() == {0: {0: 10, 1: 21}, 1: {0: 21, 1: 10}}
    add_node(root, 2)
    assert distances() == full


def test_a_storm_of_scripted_hotplug_is_applied_as_its_net_change(tmp_path):
    root = copy_tree(HOSTS / "two-socket-cxl", tmp_path / "copy")
    storm = [("remove" if i % 2 == 0 else "add", 2) for i in range(20000)]
    started = time.monotonic()
    assert apply_hotplug(root, storm) == []  # removed and added back 10000 times: where it started
    assert apply_hotplug(root, [*storm, ("remove", 2), ("remove", 1)]) == [
        "dax remove dax0.0",
        "cxl remove region0",
        "node remove node2",
        "node remove node1",
    ]
    assert time.monotonic() - started < 5
    assert sorted(n.node for n in discover(HostFS(root)).nodes) == [0]
