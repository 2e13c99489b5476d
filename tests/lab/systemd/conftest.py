"""The systemd-mode lab guest: tests here run only when the guest's PID 1 is systemd (CXLTIERD_LAB_INIT=systemd
bash tests/lab/run.sh tests/lab/systemd), where the project's .deb is installed with dpkg. They are marked
`lab_systemd` (and `lab`); the shell-mode guest skips them here, the host in tests/lab/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
IN_LAB = os.environ.get("CXLTIERD_LAB") == "1"
IN_SYSTEMD_LAB = IN_LAB and os.environ.get("CXLTIERD_LAB_INIT") == "systemd"
SKIP_REASON = "needs the systemd-mode lab guest: run CXLTIERD_LAB_INIT=systemd bash tests/lab/run.sh tests/lab/systemd"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_systemd: needs the lab guest booted with systemd as PID 1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE not in item.path.resolve().parents:
            continue
        item.add_marker(pytest.mark.lab_systemd)
        if IN_LAB and not IN_SYSTEMD_LAB:  # outside the guest, tests/lab/conftest.py skips them already
            item.add_marker(skip)
