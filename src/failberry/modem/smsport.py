"""SMS over the modem part's own AT port: the `AtSessionProvider` the alerts part uses when
no separate `alerts.sms_port` is set. It hands out the driver's channel once the driver has
set it up (the control port, or the monitoring port while pppd holds the data port), and
None otherwise (no stick, port being opened or reset, or the only port handed to pppd): the
SMS then wait in the alerts queue. Commands go through the channel's lock, so they take
turns with the driver's polling, one at a time on the port.

`AT+CNMI=2,1,0,0,0` (stored messages announced by `+CMTI`) is part of the driver's setup
after every open, so a stick reset or replugged announces messages again at once; the SMS
code sends it again on its first use of each channel (it fails during setup on a SIM still
waiting for its PIN).

An AT+CMGS holds the port until the network answers: on the shared port that is capped at
SHARED_SEND_TIMEOUT, so the driver's polling (and its status report, due within the part's
60 s deadline) is never held up longer."""

from __future__ import annotations

import logging
from collections.abc import Callable

from failberry.alerts.at_session import AtSession, ChannelSession
from failberry.modem.driver import Driver

LOG = logging.getLogger(__name__)

CNMI = "AT+CNMI=2,1,0,0,0"
SHARED_SEND_TIMEOUT = 30.0


class SharedSession(ChannelSession):
    """ChannelSession with the AT+CMGS wait capped (the driver polls on the same port)."""

    async def submit(self, command: str, body: str, timeout: float) -> list[str]:
        """As ChannelSession, waiting at most SHARED_SEND_TIMEOUT for the answer."""
        return await super().submit(command, body, min(timeout, SHARED_SEND_TIMEOUT))


class DriverSmsProvider:
    """The driver's AT channel as the SMS code's session; +CMTI URCs passed on."""

    def __init__(self, driver: Driver | None = None) -> None:
        self.driver: Driver | None = None
        self._session: SharedSession | None = None
        self._callback: Callable[[str], None] | None = None
        if driver is not None:
            self.attach(driver)

    def attach(self, driver: Driver) -> None:
        """Use `driver`'s port from now on (each modem part built hands over its own)."""
        self.driver = driver
        self._session = None
        driver.urc_listeners.append(self._urc)
        if CNMI not in driver.session.extra_setup:
            driver.session.extra_setup.append(CNMI)

    async def acquire(self) -> AtSession | None:
        """The driver's set-up channel, or None (the SMS stays queued)."""
        driver = self.driver
        if driver is None:
            return None
        channel = driver.ready_channel
        if channel is None or channel is not driver.channel or channel.gone is not None:
            return None
        if self._session is None or self._session.channel is not channel:
            self._session = SharedSession(channel)  # one per channel: set up once
        return self._session

    def on_urc(self, callback: Callable[[str], None]) -> None:
        """+CMTI lines go to `callback`."""
        self._callback = callback

    def _urc(self, line: str) -> None:
        if self._callback is not None and line.upper().startswith("+CMTI:"):
            self._callback(line)
