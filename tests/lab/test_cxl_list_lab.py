"""`cxltierd cxl` against ndctl's own `cxl list` on the real kernel: the same memdevs, decoders and regions with the
same fields and values, with and without idle objects (fields newer than the guest's ndctl 76.1 set aside)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CXLTIERD = Path(sys.executable).parent / "cxltierd"
NEWER_THAN_76 = {"firmware_version", "ram_qos_class", "pmem_qos_class", "type", "qos_class", "qos_class_mismatch"}


def run(args: list[str]) -> Any:
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (args, out.stderr)
    return json.loads(out.stdout)


def older(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the fields ndctl 76.1 does not print, its nested regions ("regions:decoderX.Y") too."""
    return {k: [older(x) for x in v] if ":" in k else v for k, v in obj.items() if k not in NEWER_THAN_76}


def by_kind(doc: list[Any]) -> dict[str, list[dict[str, Any]]]:
    assert isinstance(doc, list) and all(isinstance(c, dict) and len(c) == 1 for c in doc), doc
    return {k: v for c in doc for k, v in c.items()}


@pytest.mark.parametrize("idle", [False, True], ids=["enabled", "idle"])
def test_cxl_json_matches_ndctl_cxl_list(idle: bool) -> None:
    flags = ["-M", "-D", "-R"] + (["-i"] if idle else [])
    ndctl = by_kind(run(["cxl", "list", *flags]))
    ours = by_kind(run([str(CXLTIERD), "cxl", "--root", "/", *flags]))
    print(f"\n{subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout.strip()}: ndctl {ndctl}")
    assert list(ours) == list(ndctl)  # the same containers in the same order
    assert list(ndctl) == ["memdevs", "root decoders", "port decoders", "endpoint decoders"]
    for kind, theirs in ndctl.items():
        mine = [older(o) for o in ours[kind]]
        assert [list(o) for o in mine] == [list(o) for o in theirs], kind  # fields in ndctl's order
        assert mine == theirs, kind
    regions = [g for d in ndctl["root decoders"] for g in d.get(f"regions:{d['decoder']}", [])]
    (region,) = [g for g in regions if g["region"] == "region0"]  # held by its root decoder
    assert region["decode_state"] == "commit" and region["size"] == 512 << 20
    if idle:
        assert any(d.get("state") == "disabled" for d in ndctl["endpoint decoders"])
