"""The one `/proc/sys` adapter: read and write kernel settings as files under a root (the
real /proc/sys, or a plain directory tree in tests). Keys are sysctl(8)'s: dotted
(`kernel.panic`), or written with slashes where a part may hold a dot (an interface such as
`eth0.100` in `net/ipv4/conf/eth0.100/rp_filter`)."""

from __future__ import annotations

import os
from pathlib import Path

from failberry.errors import FailberryError


class SysctlError(FailberryError):
    """A sysctl could not be read or written; names the key and the path."""


class ProcSys:
    """Reads and writes sysctls under a /proc/sys directory (real or a test tree)."""

    def __init__(self, base: Path = Path("/proc/sys")) -> None:
        self.base = base

    def path(self, key: str) -> Path:
        """The file of a key."""
        return self.base.joinpath(*key.split("/" if "/" in key else "."))

    def read(self, key: str) -> str | None:
        """The value, whitespace-normalised; None when the kernel has no such sysctl (an
        interface not there)."""
        try:
            return " ".join(self.path(key).read_text(encoding="ascii").split())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SysctlError(f"cannot read {key} at {self.path(key)}: {e.strerror}") from None

    def write(self, key: str, value: str) -> None:
        """Set a value; SysctlError names the key when the kernel refuses it."""
        path = self.path(key)
        try:
            # O_WRONLY without O_CREAT: a sysctl the kernel lacks is an error, not a new file.
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                os.write(fd, f"{value}\n".encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise SysctlError(f"cannot set {key} = {value} at {path}: {e.strerror}"
                              f"{self.hint(key, value, e.errno)}") from None

    def hint(self, key: str, value: str, err: int | None) -> str:
        """Words after a refusal that say what to do about it (none by default)."""
        return ""
