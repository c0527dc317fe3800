"""The AT-driven Ethernet data paths (`ncm`, `ecm`): the bearer brought up with the vendor's
command on the AT port, which stays open for monitoring, and the address from DHCP on the
stick's network interface.

It stands where pppd stands for the machine (`run(port, on_up) -> status`, `stop()`), so the
ladder is the same: "redial" is bearer down and up again. Its exit statuses reuse pppd's
meanings (`ladder.PPP_EXIT`): 8 the bearer command failed, 16 the bearer or the lease was
lost, 5 stopped by us."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from failberry.config import ModemConfig
from failberry.modem.datapath import net_of_tty
from failberry.modem.dhcp import DhcpClient, DhcpError, Lease
from failberry.modem.errors import AtError, AtTimeout, PortGone
from failberry.modem.session import Session

LOG = logging.getLogger(__name__)

EXIT_STOPPED, EXIT_BEARER_FAILED, EXIT_LOST = 5, 8, 16


@dataclass(frozen=True)
class Vendor:
    """How one family of sticks raises and drops its bearer."""

    name: str
    up: str  # `{apn}` is replaced
    down: str
    lost: tuple[str, ...]  # URC prefixes (upper case) that say the bearer went down
    connected: tuple[str, ...]  # ... and that it came up


HUAWEI = Vendor("huawei", 'AT^NDISDUP=1,1,"{apn}"', "AT^NDISDUP=1,0",
                ("^NDISSTAT: 0", "^NDISSTAT:0"), ("^NDISSTAT: 1", "^NDISSTAT:1"))
ZTE = Vendor("zte", "AT+ZECMCALL=1", "AT+ZECMCALL=0",
             ("+ZECMCALL: DISCONNECT", "+ZCONSTAT: 0"),
             ("+ZECMCALL: CONNECT", "+ZCONSTAT: 1"))
GENERIC = Vendor("generic", "AT+CGACT=1,1", "AT+CGACT=0,1",
                 ("+CGEV: NW DEACT", "+CGEV: NW PDN DEACT", "+CGEV: ME PDN DEACT"),
                 ("+CGEV: ME PDN ACT", "+CGEV: NW PDN ACT"))


VENDORS = {v.name: v for v in (HUAWEI, ZTE, GENERIC)}


def parse_lost_line(vendor: str, line: str) -> bool:
    """Does this URC say the bearer of a `vendor` stick went down?"""
    return any(line.upper().startswith(p) for p in VENDORS[vendor].lost)


def vendor_for(manufacturer: str) -> Vendor:
    """The bearer commands for a stick by its `AT+CGMI` answer."""
    maker = manufacturer.upper()
    return HUAWEI if "HUAWEI" in maker else ZTE if "ZTE" in maker else GENERIC


class BearerRunner:
    """Runs one bearer at a time over the driver's AT session; `net` is the stick's network
    interface (set by discovery through `select`)."""

    exclusive = False  # the AT port stays open: the data goes over the network interface

    def __init__(self, cfg: ModemConfig, dhcp: DhcpClient, net: str | None = None,
                 at_timeout: float = 5.0, sysroot: Path = Path("/sys")) -> None:
        self.sysroot = sysroot
        self.cfg = cfg
        self.dhcp = dhcp
        self.net = net
        self.at_timeout = at_timeout
        self.session: Session | None = None
        self.vendor = GENERIC
        self._running = False
        self._done: asyncio.Event | None = None
        self._status = EXIT_LOST
        self.why = ""  # the last reason the bearer ended, for status

    @property
    def running(self) -> bool:
        """Is a bearer being held up?"""
        return self._running

    def attach(self, session: Session) -> None:
        """The driver's AT session (its channel changes as ports reopen)."""
        self.session = session

    def select(self, data: str, net: str | None) -> None:
        """Discovery found the stick: follow its network interface."""
        if net:
            self.net = net

    def urc(self, line: str) -> None:
        """A URC from the AT port: the vendor's "bearer down" ends the run."""
        up = line.upper()
        if parse_lost_line(self.vendor.name, line) and self._running:
            self._end(EXIT_LOST, f"the stick says the bearer is down ({line.strip()})")
        elif any(up.startswith(p) for p in self.vendor.connected):
            LOG.info("modem: bearer up (%s)", line.strip())

    def _end(self, status: int, why: str) -> None:
        if self._done is not None and not self._done.is_set():
            self._status, self.why = status, why
            LOG.info("modem: bearer ends: %s", why)
            self._done.set()

    async def _at(self, command: str) -> None:
        if self.session is None:
            raise PortGone("modem", "no AT session")
        await self.session.cmd(command, 2 * self.at_timeout)

    async def run(self, port: str, on_up: Callable[[str, str], None]) -> int:
        """Bearer up, DHCP on the interface, `on_up(interface, address)` at the first lease;
        held until the bearer or lease is lost or `stop()`; then bearer down."""
        self.net = await asyncio.to_thread(net_of_tty, port, self.sysroot) or self.net
        if self.net is None:
            self.why = f"no network interface found for the stick of {port}"
            return EXIT_BEARER_FAILED
        net = self.net
        self.vendor = vendor_for(self.session.info.get("manufacturer", "")
                                 if self.session else "")
        self._done = asyncio.Event()
        self._status, self.why = EXIT_LOST, ""
        self._running = True
        dhcp_task: asyncio.Task[int] | None = None
        try:
            with contextlib.suppress(AtError, AtTimeout, PortGone):  # a stale bearer, if any
                await self._at(self.vendor.down)
            try:
                await self._at(f'AT+CGDCONT=1,"IP","{self.cfg.apn}"')
                await self._at(self.vendor.up.format(apn=self.cfg.apn))
            except (AtError, AtTimeout, PortGone) as exc:
                self.why = f"bearer command failed: {exc}"
                return EXIT_BEARER_FAILED
            LOG.info("modem: bearer requested (%s); DHCP on %s", self.vendor.name, net)
            seen: list[str] = []

            def dhcp_event(event: str, lease: Lease | None) -> None:
                if lease is not None and not seen:
                    seen.append(lease.address)
                    on_up(net, lease.address)
                elif event == "deconfig" and seen:
                    self._end(EXIT_LOST, f"the DHCP lease on {net} was lost")

            dhcp_task = asyncio.create_task(self.dhcp.run(net, dhcp_event))
            done_wait = asyncio.create_task(self._done.wait())
            await asyncio.wait({dhcp_task, done_wait}, return_when=asyncio.FIRST_COMPLETED)
            done_wait.cancel()
            if dhcp_task.done() and not self._done.is_set():
                err = dhcp_task.exception()
                self._end(EXIT_LOST, f"DHCP client ended: {err or dhcp_task.result()}")
            return self._status
        except DhcpError as exc:
            self.why = str(exc)
            return EXIT_BEARER_FAILED
        finally:
            self._running = False
            if dhcp_task is not None:
                await self.dhcp.stop()
                await asyncio.gather(dhcp_task, return_exceptions=True)
            with contextlib.suppress(AtError, AtTimeout, PortGone):
                await self._at(self.vendor.down)

    async def stop(self) -> None:
        """End the run (bearer down, DHCP released); its status is 5."""
        self._end(EXIT_STOPPED, "stopped")
