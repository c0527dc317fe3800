"""The driver's small seams to the rest of the machine: the reboot command, the reboot log
that outlives the reboot, and the interface byte counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from failberry.aio import within
from failberry.errors import CommandFailed
from failberry.fileio import write_atomic
from failberry.modem.errors import ModemError

LOG = logging.getLogger(__name__)


class RebootFailed(ModemError):
    """The reboot command could not be run, failed, or did not finish in time."""


class Rebooter(Protocol):
    """The reboot seam."""

    async def reboot(self, reason: str) -> None:
        """Ask for a reboot; RebootFailed if the asking failed (tests record the call)."""


class CommandReboot:
    """Runs `[recovery] reboot_command` (`systemctl reboot` by default, which lets systemd stop
    the services cleanly) as a child of the event loop, so the supervisor keeps answering
    while it runs; a status other than 0, or no exit within `timeout`, is a RebootFailed."""

    def __init__(self, argv: Sequence[str] = ("systemctl", "reboot"),
                 timeout: float = 60.0) -> None:
        self.argv = list(argv)
        self.timeout = timeout

    async def reboot(self, reason: str) -> None:
        """Run the command; RebootFailed unless it exits 0 in time."""
        LOG.warning("rebooting: %s (running %s)", reason, shlex.join(self.argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise RebootFailed(f"cannot run `{shlex.join(self.argv)}`: {exc}") from None
        try:
            out, _ = await within(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: children go too
            await proc.wait()
            raise RebootFailed(f"`{shlex.join(self.argv)}` did not finish within "
                               f"{self.timeout:g}s") from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        if proc.returncode != 0:
            failed = CommandFailed(self.argv, proc.returncode or 0,
                                   out.decode("utf-8", "replace")[-2000:])
            raise RebootFailed(str(failed))


class RebootLog:
    """Wall times of the reboots we asked for, kept on disk so the per-day limit survives
    the reboot itself."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[float, ...]:
        """The recorded times (empty if none or unreadable)."""
        try:
            data = json.loads(self.path.read_text())
            return tuple(float(t) for t in data)
        except (OSError, ValueError, TypeError):
            return ()

    def save(self, times: tuple[float, ...]) -> None:
        """Record the times (the last few are enough), replacing the file whole."""
        write_atomic(self.path, json.dumps(list(times[-50:])))


def read_counters(interface: str, sysroot: Path = Path("/sys")) -> tuple[int | None, int | None]:
    """Bytes in and out of `interface` from sysfs; None when it is not there."""
    base = sysroot / "class" / "net" / interface / "statistics"
    try:
        return int((base / "rx_bytes").read_text()), int((base / "tx_bytes").read_text())
    except (OSError, ValueError):
        return None, None
