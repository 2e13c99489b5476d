"""A HostFS wrapper for discovery: reads values, and turns each failure into one warning instead of an exception."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cxltierd.discovery.parse import parse_int
from cxltierd.errors import HostFSError
from cxltierd.hostfs import HostFS

T = TypeVar("T")


class Reader:
    """Reads attributes through a HostFS; a missing (when required), unreadable or malformed one becomes a warning."""

    def __init__(self, fs: HostFS) -> None:
        self.fs = fs
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        """Record one warning; discovery returns them with the facts."""
        self.warnings.append(message)

    def text(self, kpath: str, required: bool = True) -> str | None:
        """The attribute's text; None (and a warning unless it is optional and absent) when it cannot be read."""
        try:
            if required:
                return self.fs.read(kpath)
            return self.fs.read_optional(kpath)
        except HostFSError as e:
            self.warn(str(e))
            return None

    def parse(self, kpath: str, parser: Callable[[str], T], required: bool = True) -> T | None:
        """The attribute parsed by `parser`; None, with a warning naming the file, when unreadable or malformed."""
        text = self.text(kpath, required)
        if text is None:
            return None
        try:
            return parser(text)
        except (ValueError, OverflowError) as e:
            self.warn(f"{self.fs.path(kpath)}: malformed value {text[:40]!r} ({e})")
            return None

    def int(self, kpath: str, required: bool = True, base: int = 0) -> int | None:
        """An integer attribute (base 0: decimal or 0x hex; base 16: hex without 0x), or None as for parse()."""
        return self.parse(kpath, lambda t: parse_int(t, base), required)
