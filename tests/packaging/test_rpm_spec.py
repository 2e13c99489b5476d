"""The RPM spec: rpmspec parses it, and what %install puts in the buildroot is exactly what %files lists.

Needs rpmspec (apt package: rpm). Debian's rpm has no pyproject-rpm-macros or systemd-rpm-macros, so the
Fedora macros are replaced by stubs that echo their name and arguments; the real ones are only used by rpmbuild
on Fedora/EL. A missing tool fails the test: CI installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "packaging" / "rpm" / "cxltierd.spec"

# Stubs for the Fedora macros the spec uses. `(-)` turns off option parsing, so `-t`, `-l` pass through.
STUB_MACROS = """
%_unitdir /usr/lib/systemd/system
%_tmpfilesdir /usr/lib/tmpfiles.d
%systemd_requires Requires(post): systemd
%systemd_post(-) echo STUB systemd_post %*
%systemd_preun(-) echo STUB systemd_preun %*
%systemd_postun_with_restart(-) echo STUB systemd_postun_with_restart %*
%tmpfiles_create(-) echo STUB tmpfiles_create %*
%pyproject_buildrequires(-) echo STUB pyproject_buildrequires %*
%pyproject_wheel echo STUB pyproject_wheel
%pyproject_install echo STUB pyproject_install
%pyproject_save_files(-) echo STUB pyproject_save_files %*
%pyproject_check_import(-) echo STUB pyproject_check_import %*
%pyproject_files %{_builddir}/pyproject-files
%buildroot /BUILDROOT
"""


def require_tool(name: str, apt_package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it with `apt-get install {apt_package}` (CI must have it)")
    return path


def sections(text: str) -> dict[str, str]:
    """%section name -> its body (the preamble is under "preamble")."""
    names = r"description|prep|generate_buildrequires|build|install|check|post|preun|postun|files|changelog"
    out: dict[str, str] = {}
    current = "preamble"
    for line in text.splitlines():
        m = re.match(rf"%({names})\b", line)
        if m:
            current = m.group(1)
            out.setdefault(current, "")
            continue
        out[current] = out.get(current, "") + line + "\n"
    return out


@pytest.fixture(scope="module")
def macros_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rpm") / "stub.macros"
    path.write_text(STUB_MACROS)
    return path


@pytest.fixture(scope="module")
def parsed(macros_file: Path) -> str:
    rpmspec = require_tool("rpmspec", "rpm")
    proc = subprocess.run(
        [rpmspec, "-P", f"--load={macros_file}", str(SPEC)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


def test_parses_without_stubs() -> None:
    """Unknown macros stay literal: the spec must still parse on a machine without Fedora's macro packages."""
    rpmspec = require_tool("rpmspec", "rpm")
    proc = subprocess.run([rpmspec, "-P", str(SPEC)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_header_matches_pyproject(macros_file: Path) -> None:
    rpmspec = require_tool("rpmspec", "rpm")
    proc = subprocess.run(
        [
            rpmspec,
            "-q",
            "--srpm",
            f"--load={macros_file}",
            "--qf",
            "%{NAME} %{VERSION} %{ARCH} %{LICENSE}\n",
            str(SPEC),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert proc.stdout.split() == ["cxltierd", project["version"], "noarch", project["license"]["text"]]


def test_pyproject_macros_and_scriptlets(parsed: str) -> None:
    s = sections(parsed)
    # rpmspec -P prints the %generate_buildrequires body without its header.
    assert "STUB pyproject_buildrequires" in parsed
    assert re.search(r"^%generate_buildrequires\n%pyproject_buildrequires$", SPEC.read_text(), re.M)
    assert "STUB pyproject_wheel" in s["build"]
    assert "STUB pyproject_install" in s["install"]
    assert "STUB pyproject_save_files cxltierd" in s["install"]
    assert "STUB systemd_post cxltierd.service" in s["post"]
    assert "STUB systemd_preun cxltierd.service" in s["preun"]
    assert "STUB systemd_postun_with_restart cxltierd.service" in s["postun"]
    raw = SPEC.read_text()
    assert re.search(r"^%files -f %\{pyproject_files\}$", raw, re.M)
    assert re.search(r"^BuildRequires:\s+systemd-rpm-macros$", raw, re.M)
    assert re.search(r"^BuildRequires:\s+python3-devel$", raw, re.M)
    assert re.search(r"^BuildArch:\s+noarch$", raw, re.M)


def test_files_match_install(parsed: str) -> None:
    s = sections(parsed)
    files = [line.strip() for line in s["files"].splitlines() if line.strip() and not line.startswith("#")]
    assert "%config(noreplace) /etc/cxltierd/policy.yaml" in files
    assert "/usr/lib/systemd/system/cxltierd.service" in files
    assert "/usr/lib/tmpfiles.d/cxltierd.conf" in files
    assert "/usr/bin/cxltierd" in files
    assert "%config(noreplace) /etc/default/cxltierd" in files
    assert "/usr/share/man/man8/cxltierd.8*" in files  # brp-compress gzips it
    assert "/usr/share/bash-completion/completions/cxltierd" in files
    listed = {line.split()[-1].removesuffix("*") for line in files if not line.startswith("%doc")}
    # Every path %install creates is owned by the package, and every installed source exists in the tree.
    for m in re.finditer(r"^install (?:-D )?(?:-d )?-m \d+ (?:(\S+) )?/BUILDROOT(\S+)$", s["install"], re.M):
        source, dest = m.group(1), m.group(2)
        assert dest in listed, f"{dest} installed but not in %files"
        if source:
            assert (REPO / source).is_file(), f"{source} missing from the source tree"
    for line in files:
        if line.startswith("%doc"):
            for doc in line.split()[1:]:
                assert (REPO / doc).is_file(), f"%doc {doc} missing from the source tree"


def test_changelog_entry_matches_version(parsed: str) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    first = next(line for line in sections(parsed)["changelog"].splitlines() if line.startswith("*"))
    assert first.endswith(f"- {version}-1"), first
