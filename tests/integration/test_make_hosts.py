"""fixtures/make_hosts.py regenerates the committed synthetic hosts exactly, and scales as the benchmark asks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "fixtures"))

from make_hosts import named_hosts, scaled_host, write_host  # noqa: E402

from cxltierd.discovery import discover  # noqa: E402
from cxltierd.hostfs import HostFS  # noqa: E402


def tree(root: Path) -> dict[str, tuple[str, str | bytes]]:
    out: dict[str, tuple[str, str | bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isfile(p):
                out[rel] = ("file", Path(p).read_bytes())
            else:
                out[rel] = ("dir", "")
    return out


@pytest.mark.parametrize("spec", named_hosts(), ids=lambda s: s.name)
def test_regenerated_hosts_equal_the_committed_ones(spec, tmp_path):
    fresh = write_host(spec, tmp_path / spec.name)
    assert tree(fresh) == tree(REPO / "fixtures" / "hosts" / spec.name)


def test_scaled_host_has_what_was_asked(tmp_path):
    root = write_host(scaled_host(16, 8, 5, 2048), tmp_path / "big")
    facts = discover(HostFS(root))
    assert not facts.warnings
    assert (len(facts.memdevs), len(facts.regions), len(facts.nodes), len(facts.blocks)) == (16, 8, 5, 2048)
    assert all(d.mode == "system-ram" and d.movable for d in facts.dax)


def test_no_empty_directories_in_fixtures():
    """git does not keep empty directories: a fixture that needs one would differ in a fresh clone."""
    empty = [d for d, subdirs, files in os.walk(REPO / "fixtures") if not subdirs and not files]
    assert empty == []
