"""The three-tier lab topology: tests here run only in a guest booted with CXLTIERD_LAB_TOPOLOGY=tiers3
(`CXLTIERD_LAB_TOPOLOGY=tiers3 bash tests/lab/run.sh tests/lab/tiers3`), where node 2 has HBM-like HMAT figures and
a second CXL device sits behind an emulated switch. They are marked `lab_tiers3` (and `lab`); a guest with the
default topology skips them here, the host in tests/lab/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
IN_LAB = os.environ.get("CXLTIERD_LAB") == "1"
IN_TIERS3_LAB = IN_LAB and os.environ.get("CXLTIERD_LAB_TOPOLOGY") == "tiers3"
SKIP_REASON = "needs the three-tier lab guest: run CXLTIERD_LAB_TOPOLOGY=tiers3 bash tests/lab/run.sh tests/lab/tiers3"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_tiers3: needs the lab guest booted with CXLTIERD_LAB_TOPOLOGY=tiers3")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE not in item.path.resolve().parents:
            continue
        item.add_marker(pytest.mark.lab_tiers3)
        if IN_LAB and not IN_TIERS3_LAB:  # outside the guest, tests/lab/conftest.py skips them already
            item.add_marker(skip)
