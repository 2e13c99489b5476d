"""The Debian package: packaging/build-deb.sh builds a .deb with the daemon, its unit, tmpfiles entry and conffile.

Needs dpkg-dev, debhelper, dh-python, pybuild-plugin-pyproject, python3-all, python3-setuptools (to build) and
python3-click, python3-yaml, python3-psutil, python3-pyudev, python3-prometheus-client (to run the packaged
command with Debian's python3). A missing tool fails the test: CI installs them.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "build-deb.sh"
DEBIAN = REPO / "packaging" / "debian"
BUILD_TOOLS = {
    "dpkg-buildpackage": "dpkg-dev",
    "dpkg-deb": "dpkg",
    "dh": "debhelper",
    "dh_python3": "dh-python",
}
APT_BUILD_DEPS = "dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools"


def require_tool(name: str, apt_package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it with `apt-get install {apt_package}` (CI must have it)")
    return path


def pyproject_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool, package in BUILD_TOOLS.items():
        require_tool(tool, package)
    if not Path("/usr/share/perl5/Debian/Debhelper/Buildsystem/pybuild.pm").exists():
        pytest.fail(f"the pybuild debhelper build system is missing: apt-get install {APT_BUILD_DEPS}")
    out = tmp_path_factory.mktemp("deb")
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(BUILD), str(out)], capture_output=True, text=True, timeout=300, check=False, cwd=REPO
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"build-deb.sh failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"deb build took {elapsed:.1f} s")
    debs = sorted(out.glob("*.deb"))
    assert len(debs) == 1, debs
    assert debs[0].name == f"cxltierd_{pyproject_version()}_all.deb"
    return debs[0]


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def contents(deb: Path) -> set[str]:
    # Lines look like "-rw-r--r-- root/root 1234 2025-01-01 00:00 ./usr/bin/cxltierd"; symlinks add " -> target".
    paths = set()
    for line in dpkg_deb("-c", str(deb)).splitlines():
        path = line.split(None, 5)[5].split(" -> ")[0]
        paths.add(path.removeprefix("./").rstrip("/"))
    return paths


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


def test_changelog_version_matches_pyproject() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.match(r"cxltierd \(([^)]+)\) ", first)
    assert m, first
    assert m.group(1).split("-")[0] == pyproject_version()


def test_control_declares_build_and_runtime_deps() -> None:
    control = (DEBIAN / "control").read_text()
    for dep in (
        "debhelper-compat (= 13)",
        "dh-python",
        "pybuild-plugin-pyproject",
        "python3-all",
        "python3-setuptools",
        "${python3:Depends}",
        "${misc:Depends}",
        "python3-psutil",
        "python3-pyudev",
        "python3-prometheus-client",
        "python3-click",
        "python3-yaml",
    ):
        assert dep in control, dep
    assert os.access(DEBIAN / "rules", os.X_OK), "debian/rules must be executable"


def test_files_installed(contents: set[str]) -> None:
    expected = {
        "usr/bin/cxltierd",
        "usr/lib/tmpfiles.d/cxltierd.conf",
        "etc/cxltierd/policy.yaml",
        "usr/lib/python3/dist-packages/cxltierd/__init__.py",
        "usr/lib/python3/dist-packages/cxltierd/cli.py",
        "usr/share/doc/cxltierd/examples/alerts.yaml",
        "usr/share/doc/cxltierd/examples/cxltierd-dashboard.json",
        "etc/default/cxltierd",
        "usr/share/man/man8/cxltierd.8.gz",
        "usr/share/bash-completion/completions/cxltierd",
    }
    assert expected <= contents, expected - contents
    units = {"lib/systemd/system/cxltierd.service", "usr/lib/systemd/system/cxltierd.service"} & contents
    assert len(units) == 1, units
    # Package data (setuptools package-data "data/**/*"): the embedded default host and scenarios.
    packaged = {p.removeprefix("usr/lib/python3/dist-packages/") for p in contents}
    data = {p for p in packaged if p.startswith("cxltierd/data/hosts/")}
    assert data, "cxltierd/data/ is missing from the package"
    in_tree = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "cxltierd" / "data").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert in_tree <= packaged, in_tree - packaged
    # Every module of the source tree is packaged.
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "cxltierd").rglob("*.py")}
    assert modules <= packaged, modules - packaged
    assert not [p for p in contents if "fixtures" in p or "/tests/" in p or p.endswith(".pyc")]


def test_conffile_and_control(deb: Path) -> None:
    conffiles = dpkg_deb("-I", str(deb), "conffiles").split()
    assert sorted(conffiles) == ["/etc/cxltierd/policy.yaml", "/etc/default/cxltierd"]
    info = dpkg_deb("-I", str(deb))
    assert re.search(r"^ Package: cxltierd$", info, re.M)
    assert re.search(r"^ Architecture: all$", info, re.M)
    depends = re.search(r"^ Depends: (.*)$", info, re.M)
    assert depends, info
    for dep in ("python3-psutil", "python3-pyudev", "python3-prometheus-client", "python3-click", "python3-yaml"):
        assert dep in depends.group(1), dep
    assert "python3" in depends.group(1)


def test_maintainer_scripts(deb: Path) -> None:
    postinst = dpkg_deb("-I", str(deb), "postinst")
    assert "deb-systemd-helper" in postinst and "cxltierd.service" in postinst
    assert "systemd-tmpfiles" in postinst and "cxltierd.conf" in postinst
    assert "py3compile" in postinst
    prerm = dpkg_deb("-I", str(deb), "prerm")
    assert "cxltierd.service" in prerm


def test_packaged_files_match_the_tree(extracted: Path) -> None:
    unit = next(p for p in (extracted / "lib/systemd/system", extracted / "usr/lib/systemd/system") if p.exists())
    assert (unit / "cxltierd.service").read_bytes() == (REPO / "systemd/cxltierd.service").read_bytes()
    assert (extracted / "usr/lib/tmpfiles.d/cxltierd.conf").read_bytes() == (
        REPO / "systemd/cxltierd.tmpfiles"
    ).read_bytes()
    assert (extracted / "etc/cxltierd/policy.yaml").read_bytes() == (REPO / "packaging/policy.yaml").read_bytes()
    assert (extracted / "etc/default/cxltierd").read_bytes() == (REPO / "packaging/default/cxltierd").read_bytes()
    completion = extracted / "usr/share/bash-completion/completions/cxltierd"
    assert completion.read_bytes() == (REPO / "packaging/completion/cxltierd").read_bytes()
    with gzip.open(extracted / "usr/share/man/man8/cxltierd.8.gz") as man:
        assert man.read() == (REPO / "packaging/cxltierd.8").read_bytes()


def test_packaged_command_runs_with_debian_python(extracted: Path) -> None:
    script = extracted / "usr/bin/cxltierd"
    assert script.read_text().startswith("#!/usr/bin/python3\n")
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.fail("Debian's /usr/bin/python3 is missing: apt-get install python3")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(extracted / "usr/lib/python3/dist-packages"), "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(
        [str(python), str(script), "--version"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    hint = "apt-get install python3-click python3-yaml python3-psutil python3-pyudev python3-prometheus-client"
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n(runtime dependencies: {hint})"
    assert pyproject_version() in proc.stdout
    # The package data is found through importlib.resources, not through the source checkout.
    code = (
        "import importlib.resources as r, cxltierd; "
        f"assert cxltierd.__file__.startswith({str(extracted)!r}), cxltierd.__file__; "
        "print(sorted(p.name for p in r.files('cxltierd').joinpath('data').iterdir()))"
    )
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False, cwd="/"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hosts" in proc.stdout


def test_lintian_is_clean(deb: Path) -> None:
    """lintian on the built .deb: no error and no warning (informational tags are allowed)."""
    lintian = require_tool("lintian", "lintian")
    proc = subprocess.run(
        [lintian, "--fail-on", "error,warning", str(deb)], capture_output=True, text=True, timeout=300, check=False
    )
    tags = [line for line in proc.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert proc.returncode == 0 and tags == [], proc.stdout + proc.stderr
