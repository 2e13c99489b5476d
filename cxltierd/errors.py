"""Exception types raised at cxltierd's boundaries."""


class CxltierdError(Exception):
    """Base of every error cxltierd reports to a user as one line."""


class HostFSError(CxltierdError):
    """A kernel file (or fixture file) was missing, unreadable or malformed."""

    def __init__(self, path: str, reason: str, errno: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.errno = errno  # the OS error number behind it, when there was one (EBUSY from DAMON's mutex, ...)


class RootError(CxltierdError):
    """The --root directory does not exist or does not look like a sysfs tree."""


class ConfigError(CxltierdError):
    """A policy or scenario file is broken; the message names the file and key path."""


class StartError(CxltierdError):
    """The daemon cannot start as asked (a metrics address that cannot be served, a socket directory missing)."""
