"""HostFS: the one place that touches /sys and /proc.

Every reader takes a HostFS. Paths are written as the kernel spells them ("/sys/bus/cxl/devices") and are
mapped under the injected root, so the same code runs on "/" and on a fixture tree. Reads raise HostFSError
naming the file; callers decide whether to skip the device or the value. Attributes are opened non-blocking and
must be regular files (a FIFO planted in a tree is refused, not waited on); under a root other than "/", every
open must resolve beneath the root, so a symlink in the tree cannot make cxltierd read or write a file outside it.
Writes (sysfs knobs, DAMON) go through the same object, so tests can record them by subclassing it (see the engine
tests' fake DAMON).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from cxltierd.errors import HostFSError, RootError

# Attributes larger than this are not kernel attributes: refuse instead of reading a huge file into memory.
MAX_ATTR_BYTES = 1 << 20
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class HostFS:
    """Read (and write) kernel files under `root`."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        self._prefix = str(self.root).rstrip("/")  # string paths: discovery reads tens of thousands of files
        self._plain_dirs: dict[str, bool] = {}  # directory -> has no symlink among its components
        self._confined = self._prefix != ""  # not "/": opens must stay beneath the root
        self._real_root: str | None = None

    def __repr__(self) -> str:
        return f"HostFS({str(self.root)!r})"

    def path(self, kpath: str) -> Path:
        """The file on disk for kernel path `kpath` ("/sys/...")."""
        return self.root / kpath.lstrip("/")

    def check_root(self) -> None:
        """Raise RootError unless root exists and holds a sys/ tree."""
        if not self.root.is_dir():
            raise RootError(f"{self.root}: root directory does not exist")
        if not (self.path("/sys/devices").is_dir() or self.path("/sys/bus").is_dir()):
            raise RootError(f"{self.root}: not a sysfs tree (no sys/devices or sys/bus under it)")

    def exists(self, kpath: str) -> bool:
        """Whether the path exists under the root (a dangling link does not)."""
        return os.path.exists(self._prefix + "/" + kpath.lstrip("/"))

    def is_dir(self, kpath: str) -> bool:
        """Whether the path is a directory under the root."""
        return os.path.isdir(self._prefix + "/" + kpath.lstrip("/"))

    def listdir(self, kpath: str, sort: bool = True) -> list[str]:
        """Entries of a directory (sorted unless asked not to); empty when it is missing, unreadable, or (under a
        root other than "/") resolves outside the root."""
        try:
            fd = os.open(self._prefix + "/" + kpath.lstrip("/"), os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS)
        except OSError:
            return []
        try:
            if self._confined and not self._beneath(fd):
                return []
            names = os.listdir(fd)
        except OSError:
            return []
        finally:
            os.close(fd)
        return sorted(names) if sort else names

    def _open(self, kpath: str, flags: int) -> int:
        """A descriptor of the regular file at `kpath`, resolved beneath the root. Raises OSError or HostFSError."""
        fd = os.open(self._prefix + "/" + kpath.lstrip("/"), flags | _OPEN_FLAGS)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise HostFSError(str(self.path(kpath)), "is a directory, expected an attribute file")
            if not stat.S_ISREG(mode):
                raise HostFSError(str(self.path(kpath)), "not a regular file, not a kernel attribute")
            if self._confined and not self._beneath(fd):
                raise HostFSError(str(self.path(kpath)), "resolves outside the root (a symlink out of the tree)")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _beneath(self, fd: int) -> bool:
        """The open file is inside the root (its path as the kernel resolved it, from /proc/self/fd)."""
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        real = os.readlink(f"/proc/self/fd/{fd}")
        return real == self._real_root or real.startswith(self._real_root.rstrip("/") + "/")

    def _raw(self, kpath: str) -> bytes:
        """Bytes of a file (os.open/os.read: no file object per read). Raises OSError or HostFSError."""
        fd = self._open(kpath, os.O_RDONLY)
        try:
            data = os.read(fd, MAX_ATTR_BYTES + 1)
            if len(data) > 4000:  # sysfs attributes fit in a page; longer files (procfs) come in pieces
                chunks = [data]
                while (chunk := os.read(fd, MAX_ATTR_BYTES + 1)) and sum(map(len, chunks)) <= MAX_ATTR_BYTES:
                    chunks.append(chunk)
                data = b"".join(chunks)
            return data
        finally:
            os.close(fd)

    def read(self, kpath: str) -> str:
        """Text of an attribute, stripped. Raises HostFSError naming the file."""
        text = self._read(kpath, missing_ok=False)
        assert text is not None
        return text

    def read_optional(self, kpath: str) -> str | None:
        """Like read(), but None when the file does not exist (other errors still raise)."""
        return self._read(kpath, missing_ok=True)

    def _read(self, kpath: str, missing_ok: bool) -> str | None:
        try:
            data = self._raw(kpath)
        except FileNotFoundError:
            if missing_ok and not os.path.islink(self.path(kpath)):
                return None
            raise HostFSError(str(self.path(kpath)), "missing") from None
        except OSError as e:
            raise HostFSError(str(self.path(kpath)), f"unreadable ({e.strerror or e})", e.errno) from None
        if len(data) > MAX_ATTR_BYTES:
            raise HostFSError(str(self.path(kpath)), f"larger than {MAX_ATTR_BYTES} bytes")
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise HostFSError(str(self.path(kpath)), "not text") from None

    def read_int(self, kpath: str, base: int = 0) -> int:
        """An integer attribute; base 0 accepts "123", "0x1f"; base 16 accepts "8000000"."""
        text = self.read(kpath)
        try:
            return int(text, base)
        except ValueError:
            raise HostFSError(str(self.path(kpath)), f"malformed integer {text[:40]!r}") from None

    def readlink(self, kpath: str) -> str | None:
        """Target of a symlink as written, or None when it is not a link."""
        try:
            return os.readlink(self._prefix + "/" + kpath.lstrip("/"))
        except OSError:
            return None

    def link_name(self, kpath: str) -> str | None:
        """Last component of a symlink's target (e.g. a `driver` link -> "kmem"), or None."""
        target = self.readlink(kpath)
        return os.path.basename(target.rstrip("/")) if target else None

    def realpath(self, kpath: str) -> str:
        """Kernel path that `kpath` resolves to, staying inside root (e.g. a /sys/bus link -> /sys/devices/...).

        A sysfs bus link is one relative hop into a real directory: resolve that hop by string operations and fall
        back to os.path.realpath (an lstat per component) only when the result is not a plain directory."""
        full = self._prefix + "/" + kpath.lstrip("/")
        try:
            target = os.readlink(full)
        except OSError:
            target = None
        if target is not None and not target.startswith("/"):
            hop = os.path.normpath(os.path.join(os.path.dirname(full), target))
            rel = os.path.relpath(hop, self._prefix or "/")
            if not rel.startswith("..") and os.path.isdir(hop) and not os.path.islink(hop):
                parent = os.path.dirname(hop)
                plain = self._plain_dirs.get(parent)
                if plain is None:  # no link in the target's parents either (many devices share parents)
                    plain = self._plain_dirs[parent] = os.path.realpath(parent) == parent
                if plain:
                    return "/" + rel if rel != "." else "/"
        real = os.path.realpath(self.path(kpath))
        root = os.path.realpath(self.root)
        rel = os.path.relpath(real, root)
        if rel.startswith(".."):
            raise HostFSError(str(self.path(kpath)), "link points outside the root")
        return "/" + rel if rel != "." else "/"

    def read_pipe(self, kpath: str, limit: int = MAX_ATTR_BYTES) -> str:
        """What a pipe-like file (tracefs trace_pipe) holds now, up to `limit` bytes, without waiting: "" when it is
        empty. Reading the kernel's trace_pipe consumes what was read; under a tree root the file is a plain file,
        emptied after the read, so a line is read once there too. Raises HostFSError naming the file."""
        try:
            fd = self._open(kpath, os.O_RDWR if self._confined else os.O_RDONLY)
            try:
                chunks: list[bytes] = []
                size = 0
                while size < limit:
                    try:
                        chunk = os.read(fd, min(65536, limit - size))
                    except BlockingIOError:
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                if self._confined:
                    os.ftruncate(fd, 0)
            finally:
                os.close(fd)
        except OSError as e:
            raise HostFSError(str(self.path(kpath)), f"unreadable ({e.strerror or e})", e.errno) from None
        return b"".join(chunks).decode("utf-8", "replace")

    def make_dir(self, kpath: str) -> bool:
        """Create a directory (a tracefs instance); False when it already existed. Raises HostFSError."""
        try:
            os.mkdir(self._prefix + "/" + kpath.lstrip("/"))
        except FileExistsError:
            return False
        except OSError as e:
            raise HostFSError(str(self.path(kpath)), f"mkdir failed ({e.strerror or e})", e.errno) from None
        return True

    def remove_dir(self, kpath: str) -> None:
        """Remove a directory cxltierd made (a tracefs instance; under a tree root, with the files in it)."""
        full = self._prefix + "/" + kpath.lstrip("/")
        try:
            if self._confined:
                shutil.rmtree(full)
            else:
                os.rmdir(full)
        except FileNotFoundError:
            return
        except OSError as e:
            raise HostFSError(str(self.path(kpath)), f"rmdir failed ({e.strerror or e})", e.errno) from None

    def ioctl(self, kpath: str, request: int, arg: bytearray | memoryview | Any) -> None:
        """Send `request` to the character device at `kpath` (a CXL memdev's /dev/cxl/memN) by ioctl, `arg` a
        writable buffer (a ctypes structure) the kernel reads and fills. Raises HostFSError naming the device, with the
        errno (ENOENT: no such device, EACCES/EPERM, ENOTTY, EBUSY, ...)."""
        p = self.path(kpath)
        try:
            fd = os.open(self._prefix + "/" + kpath.lstrip("/"), os.O_RDWR | _OPEN_FLAGS)
        except OSError as e:
            raise HostFSError(str(p), f"cannot open ({e.strerror or e})", e.errno) from None
        try:
            if not stat.S_ISCHR(os.fstat(fd).st_mode):
                raise HostFSError(str(p), "not a character device", errno.ENODEV)
            if self._confined and not self._beneath(fd):
                raise HostFSError(str(p), "resolves outside the root (a symlink out of the tree)", errno.EXDEV)
            fcntl.ioctl(fd, request, arg, True)
        except OSError as e:
            raise HostFSError(str(p), f"ioctl {request:#x} failed ({e.strerror or e})", e.errno) from None
        finally:
            os.close(fd)

    def write(self, kpath: str, value: str) -> None:
        """Write a sysfs/procfs attribute. Raises HostFSError naming the file."""
        p = self.path(kpath)
        try:
            # Under a tree, truncate only once the file is known to be beneath the root (O_TRUNC acts at open).
            fd = self._open(kpath, os.O_WRONLY if self._confined else os.O_WRONLY | os.O_TRUNC)
            try:
                if self._confined:
                    os.ftruncate(fd, 0)
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise HostFSError(str(p), f"write {value!r} failed ({e.strerror or e})", e.errno) from None
