"""systemd's notify protocol (sd_notify(3)): a datagram to $NOTIFY_SOCKET. A few lines, so we
write them rather than add a dependency."""

from __future__ import annotations

import logging
import os
import socket

LOG = logging.getLogger(__name__)


class Notifier:
    """Sends `READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`; a no-op outside systemd."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        self._failed: int | None = None  # errno of the last failed send
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines in one datagram; True when sent."""
        if self._sock is None:
            return False
        target = self.address
        if target.startswith("@"):  # abstract namespace socket
            target = "\0" + target[1:]
        try:
            self._sock.sendto("\n".join(assignments).encode(), target)
        except OSError as e:
            # Once per kind of failure: the watchdog pings every few hundred milliseconds.
            if e.errno != self._failed:
                LOG.warning("cannot notify systemd at %s: %s", self.address, e)
                self._failed = e.errno
            return False
        if self._failed is not None:
            LOG.info("notifying systemd at %s works again", self.address)
            self._failed = None
        return True

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Half of systemd's `WatchdogSec=` (from $WATCHDOG_USEC), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
