"""The emulated hosts shipped inside the package, as tar archives (wheels cannot carry a sysfs tree's symlinks).

`extract_host(dest)` unpacks one into a writable directory (the emulated backend mutates its copy for scripted
hotplug); `default_root()` unpacks the default host once per process into a private temporary directory.
"""

from __future__ import annotations

import atexit
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from cxltierd.errors import CxltierdError

_default: Path | None = None


def host_names() -> list[str]:
    """The names of the embedded hosts, sorted."""
    base = resources.files("cxltierd") / "data" / "hosts"
    return sorted(p.name.removesuffix(".tar.gz") for p in base.iterdir() if p.name.endswith(".tar.gz"))


def extract_host(dest: Path, name: str = "default") -> Path:
    """Unpack embedded host `name` into dest (created if needed) and return dest."""
    archive = resources.files("cxltierd") / "data" / "hosts" / f"{name}.tar.gz"
    if not archive.is_file():
        raise CxltierdError(f"no embedded host {name!r} (have: {', '.join(host_names())})")
    dest.mkdir(parents=True, exist_ok=True)
    with resources.as_file(archive) as path, tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            target = Path(member.name)
            if target.is_absolute() or ".." in target.parts:
                raise CxltierdError(f"{path}: unsafe member {member.name!r}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="fully_trusted")  # members checked above; "tar" re-resolves every path
        else:  # Python < 3.11.4: members were checked above
            tar.extractall(dest)
    return dest


def default_root() -> Path:
    """The default emulated host, unpacked once per process; removed at exit."""
    global _default
    if _default is None:
        tmp = Path(tempfile.mkdtemp(prefix="cxltierd-emulated-"))
        atexit.register(shutil.rmtree, tmp, True)
        _default = extract_host(tmp / "root")
    return _default
