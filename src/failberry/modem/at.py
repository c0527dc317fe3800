"""The AT layer: a byte stream from a serial port cut into lines, each line classified as the
echo, an information line or the final result of the command in flight, or an unsolicited
result code (URC). URCs go to a callback and are never handed to the waiting command.

One command at a time (V.250 allows no pipelining); the port is read from the event loop with
`add_reader`, so no thread spins, and a port that goes away removes its reader at once. After a
command times out its answer may still come; the channel is then out of step, so before the
next command it drains the port and resynchronises with `AT` (see `AtChannel.resync`)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from failberry.aio import within
from failberry.modem.errors import (
    AtError,
    AtTimeout,
    CmeError,
    CmsError,
    PortGone,
    cme_from_verbose,
)
from failberry.modem.parsers import REG_PREFIXES, is_registration_read_reply

LOG = logging.getLogger(__name__)

MAX_LINE = 4096  # a "line" longer than this is noise (a port spewing binary); drop it
PROMPT_TIMEOUT = 5.0  # AT+CMGS: the `> ` prompt comes at once on every stick seen
CTRL_Z = b"\x1a"
ESC = b"\x1b"


class SerialPort(Protocol):
    """What the AT layer needs from a serial port (pyserial's `Serial` has all of it)."""

    def fileno(self) -> int:
        """The file descriptor to watch for input."""

    def read(self, size: int) -> bytes:
        """Whatever is available, up to `size` bytes, without blocking."""

    def write(self, data: bytes) -> int | None:
        """Send bytes."""

    def close(self) -> None:
        """Release the port."""


def open_serial(path: str) -> SerialPort:
    """Open a real port with pyserial: non-blocking reads, a bounded write."""
    import serial

    try:
        port: SerialPort = serial.Serial(path, 115200, timeout=0, write_timeout=2)
    except (OSError, serial.SerialException) as exc:
        raise PortGone(path, f"cannot open: {exc}") from None
    return port


class LineSplitter:
    """Bytes in, complete text lines out. Any run of CR/LF ends a line (sticks send `\\r\\n`,
    bare `\\r` after an echo, and `\\n\\r`); NULs are dropped; bytes that are not UTF-8 become
    U+FFFD instead of an exception; a partial line waits for the rest."""

    _EOL = re.compile(rb"[\r\n]+")
    _CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

    def __init__(self) -> None:
        self._buf = b""
        self.dropped = 0

    @property
    def partial(self) -> bytes:
        """The bytes of the line not yet ended (where the AT+CMGS `> ` prompt sits)."""
        return self._buf

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by `data`, stripped, empty ones skipped."""
        parts = self._EOL.split(self._buf + data.replace(b"\0", b""))
        self._buf = parts.pop()
        if len(self._buf) > MAX_LINE:
            self.dropped += len(self._buf)
            self._buf = b""
        out = []
        for raw in parts:
            text = self._CTRL.sub("", raw.decode("utf-8", "replace")).strip()
            if text:
                out.append(text)
        return out


class Kind(enum.Enum):
    """What a line is, given the command in flight."""

    ECHO = "echo"
    INFO = "info"
    FINAL = "final"
    URC = "urc"
    NOISE = "noise"


# V.250 5.7 / TS 27.007 9.2 final result codes. CONNECT may carry a rate.
_FINAL = re.compile(r"^(OK|ERROR|NO CARRIER|BUSY|NO DIALTONE|NO DIAL TONE|NO ANSWER|CONNECT\b.*"
                    r"|\+CME ERROR:.*|\+CMS ERROR:.*|COMMAND NOT SUPPORT)$")
_SUCCESS = re.compile(r"^(OK|CONNECT\b.*)$")
# Bare-word URCs (no colon): a ring, a dropped call, ZTE/Huawei boot and phonebook notices.
_BARE_URCS = frozenset({"RING", "NO CARRIER", "+PBREADY", "^SYSSTART", "+ZEND", "^BOOT"})
_PREFIXED = re.compile(r"^([+^$%][A-Za-z0-9]+):")
_CMD_PREFIX = re.compile(r"^AT([+^$%][A-Z0-9]+)", re.IGNORECASE)


def response_prefix(command: str) -> str | None:
    """`AT+CSQ` -> `+CSQ`: the prefix its information lines carry (None for `ATI`, `ATD`)."""
    m = _CMD_PREFIX.match(command.strip())
    return m.group(1).upper() if m else None


def classify(line: str, pending: str | None) -> Kind:
    """Decide what `line` is while `pending` (the command in flight, or None) waits."""
    if "\ufffd" in line:
        return Kind.NOISE  # AT speaks ASCII: a byte that is not UTF-8 means line noise
    if pending is not None:
        if line.upper() == pending.strip().upper():
            return Kind.ECHO
        if _FINAL.match(line):
            return Kind.FINAL
    m = _PREFIXED.match(line)
    if m:
        head = m.group(1).upper()
        if pending is not None and head == response_prefix(pending):
            # `AT+CREG?` answers `+CREG: <n>,<stat>...`; a `+CREG: <stat>` arriving meanwhile
            # is the URC and must not be taken for the answer.
            if head in REG_PREFIXES and not is_registration_read_reply(line):
                return Kind.URC
            return Kind.INFO
        return Kind.URC
    if line.upper() in _BARE_URCS:
        return Kind.URC
    return Kind.INFO if pending is not None else Kind.NOISE


def final_error(command: str, line: str) -> AtError:
    """The typed error for a failure final result code."""
    upper = line.upper()
    for prefix, cls in (("+CME ERROR:", CmeError), ("+CMS ERROR:", CmsError)):
        if upper.startswith(prefix):
            arg = line[len(prefix):].strip()
            if arg.isdigit():
                return cls(command, int(arg))
            code = cme_from_verbose(arg) if cls is CmeError else None
            return cls(command, code if code is not None else -1, arg)
    return AtError(command, line)


@dataclass
class _Pending:
    command: str
    future: asyncio.Future[list[str]]
    label: str
    lines: list[str] = field(default_factory=list)
    prompt: asyncio.Event | None = None  # set when the `> ` prompt came (AT+CMGS)


class AtChannel:
    """Commands and URCs over one serial port. `start()` before use, `close()` after."""

    def __init__(self, port: SerialPort, name: str, on_urc: Callable[[str], None],
                 on_gone: Callable[[PortGone], None] | None = None) -> None:
        self.port = port
        self.name = name
        self.on_urc = on_urc
        self.on_gone = on_gone
        self.splitter = LineSplitter()
        self.gone: PortGone | None = None
        self.urcs = 0
        self.noise = 0
        self._pending: _Pending | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self.stale = False  # a command timed out: its late answer may still be on the way
        self.resyncs = 0
        self._last_rx = 0.0

    def start(self) -> None:
        """Begin watching the port for input."""
        self._loop = asyncio.get_running_loop()
        self._fd = self.port.fileno()
        self._loop.add_reader(self._fd, self._readable)

    def close(self) -> None:
        """Stop watching and release the port; a waiting command fails with PortGone."""
        self._stop_reading()
        if self.gone is None:
            self.gone = PortGone(self.name, "closed")
        self._fail_pending(self.gone)
        try:
            self.port.close()
        except Exception as exc:  # noqa: BLE001 - a dying port may fail to close; it is gone
            LOG.debug("%s: close failed: %s", self.name, exc)

    def _stop_reading(self) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None

    def _fail_pending(self, exc: Exception) -> None:
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(exc)

    def _lost(self, reason: str) -> None:
        # Remove the reader first: a hung-up fd stays readable forever and would spin the loop.
        self._stop_reading()
        if self.gone is not None:
            return
        self.gone = PortGone(self.name, reason)
        LOG.warning("%s: port gone: %s", self.name, reason)
        self._fail_pending(self.gone)
        if self.on_gone is not None:
            self.on_gone(self.gone)

    def _readable(self) -> None:
        if self._loop is not None:
            self._last_rx = self._loop.time()
        try:
            data = self.port.read(4096)
        except Exception as exc:  # noqa: BLE001 - pyserial raises SerialException or OSError
            self._lost(f"read failed: {exc}")
            return
        if not data:
            self._lost("end of file")
            return
        for line in self.splitter.feed(data):
            self._line(line)
        pending = self._pending
        # The prompt is "\r\n> " with no line end after it: it waits in the partial line.
        if pending is not None and pending.prompt is not None and \
                self.splitter.partial.rstrip(b" ").endswith(b">"):
            pending.prompt.set()

    def _line(self, line: str) -> None:
        pending = self._pending
        kind = classify(line, pending.command if pending else None)
        if kind is Kind.URC:
            self.urcs += 1
            self.on_urc(line)
        elif kind is Kind.NOISE:
            self.noise += 1
            LOG.debug("%s: ignoring %r", self.name, line[:80])
        elif pending is None or pending.future.done() or kind is Kind.ECHO:
            return
        elif kind is Kind.INFO:
            if not (line == ">" and pending.prompt is not None):  # the prompt, now ended
                pending.lines.append(line)
        elif _SUCCESS.match(line):
            pending.future.set_result([*pending.lines, line] if line.startswith("CONNECT")
                                      else pending.lines)
        else:
            pending.future.set_exception(final_error(pending.label, line))

    async def command(self, command: str, timeout: float = 5.0,
                      label: str | None = None, resync: bool = True) -> list[str]:
        """Send `command`; its information lines on success, or AtError/AtTimeout/PortGone.
        `label` replaces the command in errors and logs (it may hold the PIN). A channel left
        out of step by an earlier timeout resynchronises first (AtTimeout if it cannot),
        unless `resync` is False (a reset is worth sending to a modem that seems silent)."""
        async with self._lock:
            if self.gone is not None:
                raise self.gone
            if self.stale and resync:
                await self._resync(min(timeout, 2.0))
            return await self._send(command, timeout, label or command)

    async def submit(self, command: str, body: str, timeout: float) -> list[str]:
        """Send `command` (AT+CMGS), wait for the `> ` prompt, then `body` and Ctrl-Z (TS
        27.005 3.5.1): bytes typed before the prompt are lost on some sticks. Its information
        lines; AtTimeout when no prompt comes within PROMPT_TIMEOUT (ESC then leaves the
        prompt, nothing sent) or no final result within `timeout` after the body."""
        async with self._lock:
            if self.gone is not None:
                raise self.gone
            if self.stale:
                await self._resync(min(timeout, 2.0))
            return await self._send(command, timeout, command, body)

    async def resync(self, timeout: float = 1.0) -> None:
        """Drain what is left of late answers, then `AT` until its own `OK`; AtTimeout if the
        modem stays silent, PortGone if the port went away."""
        async with self._lock:
            if self.gone is not None:
                raise self.gone
            await self._resync(timeout)

    async def _resync(self, timeout: float) -> None:
        # The late answer of the command that timed out comes before anything sent now (the
        # modem answers in order): wait for the port to fall quiet, send AT, take the first
        # final result for it, then swallow whatever else is in flight (AT's own OK, if the
        # first one was the late answer's).
        await self._drain(0.2, timeout)
        with contextlib.suppress(AtError):  # an answer is an answer: the modem talks again
            await self._send("AT", timeout, "AT (resynchronising)")
        await self._drain(0.1, timeout)
        self.stale = False
        self.resyncs += 1

    async def _drain(self, quiet: float, limit: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while True:
            now = loop.time()
            idle = now - self._last_rx
            if idle >= quiet or now >= end:
                return
            await asyncio.sleep(min(quiet - idle, end - now))

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except Exception as exc:  # noqa: BLE001 - SerialTimeoutException, OSError
            self._lost(f"write failed: {exc}")
            raise self.gone or PortGone(self.name, str(exc)) from None

    async def _prompted(self, pending: _Pending) -> None:
        """Wait for the prompt (or an early final result, which the caller then returns)."""
        assert pending.prompt is not None
        waiter: asyncio.Future[Any] = asyncio.ensure_future(pending.prompt.wait())
        final: asyncio.Future[Any] = pending.future
        try:
            await asyncio.wait({waiter, final}, timeout=PROMPT_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if pending.future.done():
            return
        if not pending.prompt.is_set():
            self._write(ESC)  # leave the prompt without sending anything
            self.stale = True
            raise AtTimeout(f"{pending.label} (no prompt)", PROMPT_TIMEOUT, self.name)

    async def _send(self, command: str, timeout: float, label: str,
                    body: str | None = None) -> list[str]:
        loop = asyncio.get_running_loop()
        pending = _Pending(command, loop.create_future(), label=label,
                           prompt=asyncio.Event() if body is not None else None)
        self._pending = pending
        try:
            self._write(command.encode("ascii") + b"\r")
            if body is not None:
                await self._prompted(pending)
                if not pending.future.done():
                    self._write(body.encode("ascii") + CTRL_Z)
            # Not asyncio.wait_for: it dropped the cancellation of a command whose port
            # closed in the same step (failberry.aio), and the poller never stopped.
            try:
                return await within(pending.future, timeout)
            except TimeoutError:
                self.stale = True
                raise AtTimeout(pending.label, timeout, self.name) from None
        finally:
            self._pending = None

    async def probe(self, timeout: float = 1.0) -> bool:
        """Does anything on this port answer `AT` with OK?"""
        try:
            await self.command("AT", timeout)
        except (AtError, AtTimeout, PortGone):
            return False
        return True
