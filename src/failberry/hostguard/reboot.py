"""The reboot action, a seam: the real one calls reboot(2) with RB_AUTOBOOT; tests record.

No sync first: sync(2) would block on the very device that hangs, and with it the reboot."""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Protocol

from failberry.errors import FailberryError

LOG = logging.getLogger(__name__)

RB_AUTOBOOT = 0x01234567  # <sys/reboot.h>: LINUX_REBOOT_CMD_RESTART
MCL_CURRENT, MCL_FUTURE = 1, 2  # <sys/mman.h>


class RebootFailed(FailberryError):
    """reboot(2) returned, which it only does on failure (no CAP_SYS_BOOT, say)."""


class Rebooter(Protocol):
    """Restarts the machine now."""

    def reboot(self, reason: str) -> None:
        """Reboot; the real one does not return."""
        ...


class Libc:
    """The few libc calls we need, bound once at start so none loads anything later."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)
        self._reboot = self.lib.reboot
        self._reboot.argtypes = [ctypes.c_int]
        self._mlockall = self.lib.mlockall
        self._mlockall.argtypes = [ctypes.c_int]

    def reboot(self, howto: int) -> int:
        """reboot(2); 0 or the errno."""
        return 0 if self._reboot(howto) == 0 else ctypes.get_errno()

    def mlockall(self) -> int:
        """Lock current and future memory; 0 or the errno."""
        return 0 if self._mlockall(MCL_CURRENT | MCL_FUTURE) == 0 else ctypes.get_errno()


class KernelReboot:
    """reboot(2) with RB_AUTOBOOT, without sync."""

    def __init__(self, libc: Libc) -> None:
        self.libc = libc

    def reboot(self, reason: str) -> None:
        """Restart now."""
        LOG.critical("rebooting now (reboot(2), RB_AUTOBOOT, no sync): %s", reason)
        err = self.libc.reboot(RB_AUTOBOOT)
        raise RebootFailed(f"reboot(2) failed: {os.strerror(err)}")
