"""cxltierd.ras is pure core: it imports only the value and validation layers, never reads the clock and opens no
file (the daemon's I/O layer feeds it lines and time)."""

from __future__ import annotations

import ast
from pathlib import Path

RAS = Path(__file__).resolve().parents[2] / "cxltierd" / "ras"
ALLOWED = ("cxltierd.ras", "cxltierd.validate", "cxltierd.errors", "cxltierd.units", "cxltierd.model")
BANNED_MODULES = ("time", "datetime", "os", "pathlib", "io", "subprocess", "socket")


def test_ras_imports_only_the_layers_below_it_and_no_clock_or_io():
    found = []
    for path in sorted(RAS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if (top == "cxltierd" and not name.startswith(ALLOWED)) or top in BANNED_MODULES:
                    found.append(f"{path.name}:{node.lineno} imports {name}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                found.append(f"{path.name}:{node.lineno} calls open()")
    assert len(list(RAS.glob("*.py"))) >= 5
    assert found == []
