"""What the lab benchmarks share: the lab's test helpers as a module, starting a workload, publishing a table, and
the pytest entry that runs a benchmark inside the QEMU guest (tests/lab/run.sh) and skips it elsewhere."""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def lab() -> ModuleType:
    """tests/lab/conftest.py as a plain module (LabDaemon, move_pages, pages_on_nodes, vmstat, COMPANION, ...)."""
    if str(REPO / "tests/lab") not in sys.path:
        sys.path.insert(0, str(REPO / "tests/lab"))  # for what it imports beside it (labfs)
    spec = importlib.util.spec_from_file_location("lab_conftest", REPO / "tests/lab/conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def start_workload(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """tests/lab/workload.py with these arguments, once it has printed its JSON line (pid, addr, length, ...)."""
    cmd = [sys.executable, str(REPO / "tests/lab/workload.py"), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "LD_BIND_NOW": "1"})
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"workload {args} did not start")
    info: dict[str, Any] = json.loads(line)
    return proc, info


def publish(table: str, name: str) -> None:
    """Print the table; in the guest also leave it in the share as benchmarks/NAME.md for the host."""
    print(table)
    share = os.environ.get("CXLTIERD_LAB_SHARE")
    if share:
        out = Path(share) / "benchmarks"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(table + "\n")


def in_guest(script: str, main: Callable[[list[str]], int]) -> None:
    """The pytest entry: run main with its defaults in the lab guest, skip anywhere else."""
    import pytest

    if os.environ.get("CXLTIERD_LAB") != "1":
        pytest.skip(f"needs the QEMU lab guest: bash tests/lab/run.sh benchmarks/{script} -s")
    main([])
