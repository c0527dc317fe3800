"""The seam between the SMS code and a modem's AT port.

`AtSession` is what the SMS code needs: plain commands, and a command that waits for the
`> ` prompt before it sends a body ended by Ctrl-Z (AT+CMGS, TS 27.005 3.5.1).
`AtSessionProvider` hands one out while a port is there (None while the modem is absent)
and passes +CMTI URCs on.

Two providers, both over the modem part's `AtChannel` (whose `submit` waits for the prompt):
- `SerialSmsProvider`: an AT port the SMS code owns (`alerts.sms_port`; sticks with three
  ports), opened as an `AtChannel` of its own.
- `ChannelSession`: wraps the modem part's own channel (its monitoring port; handed out by
  `failberry.modem.smsport.DriverSmsProvider`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from failberry.modem.at import AtChannel, SerialPort
from failberry.modem.errors import ModemError

LOG = logging.getLogger(__name__)


class AtSession(Protocol):
    """AT commands for the SMS code."""

    async def command(self, command: str, timeout: float = 5.0) -> list[str]:
        """Send `command`; its information lines, or AtError/AtTimeout/PortGone."""

    async def submit(self, command: str, body: str, timeout: float) -> list[str]:
        """Send `command`, wait for `> `, send `body` and Ctrl-Z; the information lines."""


class AtSessionProvider(Protocol):
    """Where the SMS code gets an AT session."""

    async def acquire(self) -> AtSession | None:
        """A session now, or None (no modem, port busy): the SMS waits in the queue."""

    def on_urc(self, callback: Callable[[str], None]) -> None:
        """Have URC lines (+CMTI) passed to `callback`."""


class SerialSmsProvider:
    """Opens `path` when a session is wanted and keeps it while it works."""

    def __init__(self, path: str, opener: Callable[[str], SerialPort]) -> None:
        self.path = path
        self.opener = opener
        self._port: AtChannel | None = None
        self._urc: Callable[[str], None] = lambda line: None
        self._opening = asyncio.Lock()  # two callers must not open the port twice

    def on_urc(self, callback: Callable[[str], None]) -> None:
        """URCs go to `callback`."""
        self._urc = callback

    def _forward_urc(self, line: str) -> None:
        self._urc(line)  # looked up at each URC: `on_urc` may come after the port opened

    async def acquire(self) -> AtSession | None:
        """The open port, (re)opened and set up if needed; None if it cannot be."""
        async with self._opening:
            return await self._acquire()

    async def _acquire(self) -> AtSession | None:
        if self._port is not None and self._port.gone is None:
            return self._port
        self.close()
        try:
            port = AtChannel(self.opener(self.path), self.path, self._forward_urc)
        except ModemError as e:
            LOG.debug("SMS port %s not available: %s", self.path, e)
            return None
        port.start()
        try:
            await port.command("ATE0", 2.0)
            await port.command("AT+CMEE=1", 2.0)
        except ModemError as e:
            LOG.warning("SMS port %s does not answer: %s", self.path, e)
            port.close()
            return None
        self._port = port
        LOG.info("SMS port %s open", self.path)
        return port

    def close(self) -> None:
        """Let the port go."""
        if self._port is not None:
            self._port.close()
            self._port = None


class ChannelSession:
    """An AtSession over the modem part's AtChannel."""

    def __init__(self, channel: AtChannel) -> None:
        self.channel = channel

    async def command(self, command: str, timeout: float = 5.0) -> list[str]:
        """Through the channel."""
        return await self.channel.command(command, timeout)

    async def submit(self, command: str, body: str, timeout: float) -> list[str]:
        """Through the channel, which waits for the prompt before the body."""
        return await self.channel.submit(command, body, timeout)
