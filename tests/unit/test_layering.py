"""The architecture, checked: dependency arrows point down, only the I/O layer opens /sys and /proc, and the pure
core never reads the clock. Each rule names the module and line that breaks it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "cxltierd"

# module prefix -> cxltierd modules it may import (prefixes); None: anything
MAY_IMPORT: dict[str, tuple[str, ...] | None] = {
    "cxltierd.model": (),
    "cxltierd.errors": (),
    "cxltierd.shown": (),
    "cxltierd.units": ("cxltierd.shown",),
    "cxltierd.facts": ("cxltierd.errors",),
    "cxltierd.validate": ("cxltierd.errors", "cxltierd.units", "cxltierd.shown"),
    "cxltierd.topology": ("cxltierd.facts", "cxltierd.errors", "cxltierd.units", "cxltierd.model"),
    "cxltierd.policy": (
        "cxltierd.policy",
        "cxltierd.model",
        "cxltierd.topology",
        "cxltierd.validate",
        "cxltierd.errors",
        "cxltierd.units",
        "cxltierd.shown",
        "cxltierd.ras.policy",
    ),
    "cxltierd.hostfs": ("cxltierd.errors",),
    "cxltierd.ras": (
        "cxltierd.ras",
        "cxltierd.model",
        "cxltierd.validate",
        "cxltierd.errors",
        "cxltierd.units",
        "cxltierd.shown",
    ),
    "cxltierd.discovery": (
        "cxltierd.discovery",
        "cxltierd.ras.mailbox",  # the mailbox's layouts and parsers: pure, importing nothing of cxltierd
        "cxltierd.hostfs",
        "cxltierd.facts",
        "cxltierd.model",
        "cxltierd.errors",
        "cxltierd.units",
    ),
}
# module prefix -> cxltierd modules it must not import
MUST_NOT: dict[str, tuple[str, ...]] = {
    "cxltierd.engines": ("cxltierd.service", "cxltierd.report", "cxltierd.app", "cxltierd.cli", "cxltierd.loop"),
    "cxltierd.emulate": ("cxltierd.service", "cxltierd.report", "cxltierd.app", "cxltierd.cli"),
    "cxltierd.loop": ("cxltierd.service", "cxltierd.report", "cxltierd.app", "cxltierd.cli", "cxltierd.emulate"),
    "cxltierd.app": ("cxltierd.service", "cxltierd.report", "cxltierd.cli"),
    "cxltierd.report": ("cxltierd.service", "cxltierd.app", "cxltierd.cli"),  # the service renders with report
}
# who may import the renderers: the CLI, the service (daemon, status) and report itself
RENDER_USERS = ("cxltierd.cli", "cxltierd.service", "cxltierd.report")
# the I/O layer: the only modules that may name /sys or /proc paths in an open()
IO_LAYER = ("cxltierd.hostfs",)
# the pure core: no clock
PURE = (
    "cxltierd.model",
    "cxltierd.policy",
    "cxltierd.topology",
    "cxltierd.loop",
    "cxltierd.discovery.parse",
    "cxltierd.engines.select",
    "cxltierd.engines.registry",
    "cxltierd.facts",
)
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("datetime", "now")}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        yield name, ast.parse(path.read_text(), str(path))


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "cxltierd":
                for alias in node.names:
                    yield node.lineno, f"cxltierd.{alias.name}"
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def violations_of_imports() -> list[str]:
    out = []
    for name, tree in modules():
        for line, target in imports(tree):
            if not target.startswith("cxltierd"):
                continue
            for prefix, allowed in MAY_IMPORT.items():
                if under(name, prefix) and allowed is not None and not any(under(target, a) for a in allowed):
                    out.append(f"{name}:{line} imports {target} (only {', '.join(allowed) or 'nothing of cxltierd'})")
            for prefix, banned in MUST_NOT.items():
                if under(name, prefix) and any(under(target, b) for b in banned):
                    out.append(f"{name}:{line} imports {target}")
            if under(target, "cxltierd.report") and not any(under(name, u) for u in RENDER_USERS):
                out.append(f"{name}:{line} imports the renderers")
    return out


def kernel_paths(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.startswith(("/sys", "/proc")):
            return True
    return False


DIRECT = {"open", "Path", "PurePath"}  # bare calls that open or name a file
MODULES = {"os", "pathlib", "io", "shutil", "glob", "builtins"}  # os.open, os.listdir, pathlib.Path, ...


def violations_of_io() -> list[str]:
    out = []
    for name, tree in modules():
        if name in IO_LAYER:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            direct = isinstance(f, ast.Name) and f.id in DIRECT
            via_module = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in MODULES
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if (direct or via_module) and any(kernel_paths(a) for a in node.args):
                out.append(f"{name}:{node.lineno} calls {fname}() on a /sys or /proc path: use HostFS")
    return out


def violations_of_purity() -> list[str]:
    out = []
    for name, tree in modules():
        if not any(under(name, p) for p in PURE):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                base = node.func.value
                owner = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
                if (owner, node.func.attr) in CLOCK_CALLS:
                    out.append(f"{name}:{node.lineno} reads the clock ({owner}.{node.func.attr}): pass time in")
            if isinstance(node, ast.ImportFrom) and node.module == "time":
                out.append(f"{name}:{node.lineno} imports from time: pass time in")
    return out


def test_dependency_arrows_point_down():
    assert violations_of_imports() == []


def test_only_the_io_layer_opens_sys_and_proc():
    assert violations_of_io() == []


def test_the_pure_core_never_reads_the_clock():
    assert violations_of_purity() == []


def test_the_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    """Each rule fires on a module written to break it (so a rule that matches nothing cannot pass silently)."""
    bad = {
        "policy/bad.py": "from cxltierd.engines.damos import DamosEngine\nimport time\nx = time.monotonic()\n",
        "model.py": "from cxltierd.service import daemon\n",
        "engines/bad.py": "from cxltierd.report import render\nopen('/proc/vmstat')\n",
    }
    root = tmp_path / "cxltierd"
    for rel, text in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setattr(__import__(__name__), "PKG", root)
    globals()["PKG"] = root
    try:
        imp, io, pure = violations_of_imports(), violations_of_io(), violations_of_purity()
    finally:
        globals()["PKG"] = Path(__file__).resolve().parents[2] / "cxltierd"
    assert any(v.startswith("cxltierd.policy.bad:1 imports cxltierd.engines.damos") for v in imp), imp
    assert any(v.startswith("cxltierd.model:1 imports cxltierd.service") for v in imp), imp
    assert any("cxltierd.engines.bad:1 imports cxltierd.report" in v for v in imp), imp
    assert io == ["cxltierd.engines.bad:2 calls open() on a /sys or /proc path: use HostFS"]
    assert pure == ["cxltierd.policy.bad:3 reads the clock (time.monotonic): pass time in"]
