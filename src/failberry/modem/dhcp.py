"""DHCP on the stick's network interface (NCM, ECM, HiLink): busybox's `udhcpc` (Debian
package `udhcpc`) run in the foreground as a child, with a script failberry writes that puts
the address on the interface, and the router as a default route of metric 4000 in `main`
(where the network part learns an uplink's gateway), and tells us what it did on stdout.
DNS stays with failberry's network part, as with pppd.

udhcpc keeps the lease (renewals, rebinding, a new discovery after losing it); we follow its
`bound`, `renew`, `deconfig`, `leasefail` and `nak` calls."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from failberry.modem.errors import ModemError
from failberry.modem.ppp import terminate

LOG = logging.getLogger(__name__)

TAG = "failberry-dhcp"
METRIC = 4000  # the default route's metric in `main`: below every other uplink's
SCRIPT = f"""#!/bin/sh
# failberry's udhcpc script: the address on the stick's interface, reported on stdout.
# The router goes in as a default route of metric {METRIC} in `main`, where the network
# part learns the uplink's gateway from (its rules keep `main`'s defaults out of the way).
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    echo "{TAG} deconfig" ;;
  bound)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${{mask:-$subnet}}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${{router%% *}}" dev "$interface" \
        metric {METRIC}
    echo "{TAG} bound $ip ${{mask:-$subnet}} ${{router%% *}} $dns" ;;
  renew)
    ip addr replace "$ip/${{mask:-$subnet}}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${{router%% *}}" dev "$interface" \
        metric {METRIC}
    echo "{TAG} renew $ip ${{mask:-$subnet}} ${{router%% *}} $dns" ;;
  *)
    echo "{TAG} $1" ;;
esac
exit 0
"""


class DhcpError(ModemError):
    """The DHCP client could not be run."""


@dataclass(frozen=True)
class Lease:
    """What the DHCP server gave: the address, its mask or prefix, the router and DNS."""

    address: str
    mask: str
    router: str
    dns: tuple[str, ...]


def parse_line(line: str) -> tuple[str, Lease | None] | None:
    """One line of the script's output: (event, lease for bound/renew); None if not ours."""
    words = line.split()
    if len(words) < 2 or words[0] != TAG:
        return None
    event = words[1]
    if event in ("bound", "renew") and len(words) >= 4:
        router = words[4] if len(words) > 4 else ""
        return event, Lease(words[2], words[3], router, tuple(words[5:]))
    return event, None


class DhcpClient:
    """Runs one `udhcpc -f` on an interface; `argv` is the program (a test prefixes
    `ip netns exec NS`)."""

    def __init__(self, directory: Path, argv: Sequence[str] = ("udhcpc",),
                 stop_grace: float = 3.0) -> None:
        self.directory = directory
        self.argv = list(argv)
        self.stop_grace = stop_grace
        self.lease: Lease | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def script(self) -> Path:
        """Write the script (0700) and return its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "udhcpc.script"
        path.write_text(SCRIPT)
        os.chmod(path, 0o700)
        return path

    async def run(self, interface: str, on_event: Callable[[str, Lease | None], None]) -> int:
        """Run udhcpc on `interface` until it exits or is stopped; `on_event(event, lease)`
        for each script call. The lease is released on the way out (`-R`)."""
        argv = [*self.argv, "-f", "-R", "-i", interface, "-s", str(self.script()),
                "-t", "4", "-T", "1", "-A", "2"]
        LOG.info("modem: DHCP on %s: %s", interface, shlex.join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise DhcpError(f"cannot run {shlex.join(argv)}: {exc}") from None
        self._proc = proc
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                parsed = parse_line(line)
                if parsed is None:
                    LOG.debug("udhcpc: %s", line)
                    continue
                event, lease = parsed
                if lease is not None:
                    self.lease = lease
                elif event == "deconfig":
                    self.lease = None
                LOG.info("modem: DHCP %s on %s%s", event, interface,
                         f": {lease.address}/{lease.mask} via {lease.router}" if lease else "")
                on_event(event, lease)
            return await proc.wait()
        finally:
            if proc.returncode is None:
                await terminate(proc, self.stop_grace, "udhcpc", group=True)
            self._proc = None
            self.lease = None

    async def stop(self) -> None:
        """SIGTERM udhcpc (it releases the lease with -R); SIGKILL if it lingers."""
        if self._proc is not None and self._proc.returncode is None:
            await terminate(self._proc, self.stop_grace, "udhcpc", group=True)

