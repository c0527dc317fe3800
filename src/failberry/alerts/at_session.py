"""The seam between the SMS code and a modem's AT port.

`AtSession` is what the SMS code needs: plain commands, and a command that waits for the
`> ` prompt before it sends a body ended by Ctrl-Z (AT+CMGS, TS 27.005 3.5.1).
`AtSessionProvider` hands one out while a port is there (None while the modem is absent)
and passes +CMTI URCs on.

Two providers:
- `SerialSmsProvider`: an AT port the SMS code owns (`alerts.sms_port`; sticks with three
  ports). `SmsPort` is a small AT reader with the prompt handling, built on the modem
  part's line splitter and classifier.
- `ChannelSession`: wraps the modem part's `AtChannel` (its monitoring port; handed out by
  `failberry.modem.smsport.DriverSmsProvider`); `AtChannel.submit` waits for the prompt.
  A channel without `submit` gets the body typed ahead of the prompt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from failberry.modem.at import AtChannel, Kind, LineSplitter, SerialPort, classify, final_error
from failberry.modem.errors import AtTimeout, ModemError, PortGone

LOG = logging.getLogger(__name__)

CTRL_Z = b"\x1a"
ESC = b"\x1b"
PROMPT_TIMEOUT = 5.0


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


class SmsPort:
    """One AT command at a time over a port the SMS code owns, with the AT+CMGS prompt."""

    def __init__(self, port: SerialPort, name: str, on_urc: Callable[[str], None]) -> None:
        self.port = port
        self.name = name
        self.on_urc = on_urc
        self.splitter = LineSplitter()
        self.gone: PortGone | None = None
        self._lock = asyncio.Lock()
        self._pending: str | None = None
        self._lines: list[str] = []
        self._final: asyncio.Future[list[str]] | None = None
        self._prompt: asyncio.Event | None = None
        self._tail = b""
        self._fd: int | None = None

    def start(self) -> None:
        """Watch the port."""
        self._fd = self.port.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def close(self) -> None:
        """Stop watching and release the port."""
        self._lost("closed")
        try:
            self.port.close()
        except Exception as e:  # noqa: BLE001 - a dying port may fail to close; it is gone
            LOG.debug("%s: close failed: %s", self.name, e)

    def _lost(self, reason: str) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self.gone is None:
            self.gone = PortGone(self.name, reason)
            if self._final is not None and not self._final.done():
                self._final.set_exception(self.gone)

    def _readable(self) -> None:
        try:
            data = self.port.read(4096)
        except Exception as e:  # noqa: BLE001 - pyserial raises SerialException or OSError
            self._lost(f"read failed: {e}")
            return
        if not data:
            self._lost("end of file")
            return
        self._tail = (self._tail + data)[-4:]
        for line in self.splitter.feed(data):
            self._line(line)
        # The prompt is "\r\n> " with no line end after it: look at the raw bytes.
        if self._prompt is not None and self._tail.rstrip(b" ").endswith(b">"):
            self._prompt.set()

    def _line(self, line: str) -> None:
        kind = classify(line, self._pending)
        if kind is Kind.URC:
            self.on_urc(line)
        elif kind in (Kind.NOISE, Kind.ECHO) or self._final is None or self._final.done():
            return
        elif kind is Kind.INFO:
            if line != ">":
                self._lines.append(line)
        elif line.startswith("OK"):
            self._final.set_result(list(self._lines))
        else:
            assert self._pending is not None
            self._final.set_exception(final_error(self._pending, line))

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except Exception as e:  # noqa: BLE001 - SerialTimeoutException, OSError
            self._lost(f"write failed: {e}")
            raise self.gone or PortGone(self.name, str(e)) from None

    async def _run(self, command: str, body: str | None, timeout: float) -> list[str]:
        async with self._lock:
            if self.gone is not None:
                raise self.gone
            loop = asyncio.get_running_loop()
            self._pending, self._lines = command, []
            self._final = loop.create_future()
            self._prompt = asyncio.Event() if body is not None else None
            try:
                self._write(command.encode("ascii") + b"\r")
                if body is not None:
                    assert self._prompt is not None
                    waiter: asyncio.Future[Any] = asyncio.ensure_future(self._prompt.wait())
                    final: asyncio.Future[Any] = self._final
                    done, _ = await asyncio.wait({waiter, final}, timeout=PROMPT_TIMEOUT,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if self._final.done():
                        return self._final.result()  # an error instead of the prompt
                    if not done:
                        self._write(ESC)  # leave the prompt without sending
                        raise AtTimeout(f"{command} (prompt)", PROMPT_TIMEOUT, self.name)
                    self._write(body.encode("ascii") + CTRL_Z)
                try:
                    return await asyncio.wait_for(self._final, timeout)
                except TimeoutError:
                    raise AtTimeout(command, timeout, self.name) from None
            finally:
                self._pending, self._final, self._prompt = None, None, None

    async def command(self, command: str, timeout: float = 5.0) -> list[str]:
        """Send `command`; its information lines."""
        return await self._run(command, None, timeout)

    async def submit(self, command: str, body: str, timeout: float) -> list[str]:
        """Send `command`, the body after the prompt, Ctrl-Z; the information lines."""
        return await self._run(command, body, timeout)


class SerialSmsProvider:
    """Opens `path` when a session is wanted and keeps it while it works."""

    def __init__(self, path: str, opener: Callable[[str], SerialPort]) -> None:
        self.path = path
        self.opener = opener
        self._port: SmsPort | None = None
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
            port = SmsPort(self.opener(self.path), self.path, self._forward_urc)
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
        """The channel's own prompt-waiting `submit` if it has one; else the body typed
        ahead of the prompt in one write."""
        own = getattr(self.channel, "submit", None)
        if own is not None:
            lines: list[str] = await own(command, body, timeout)
            return lines
        return await self.channel.command(f"{command}\r{body}\x1a", timeout, label=command)
