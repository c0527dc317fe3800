"""What failberry says to a stick over one AT channel: the setup after opening a port, the SIM
and PIN, registration, signal and operator; and, after pppd, bringing the data port back from
data mode. The driver decides when; this module knows how, and what the answers mean.

Optional commands a stick does not know (`AT+CEREG?` on a 3G stick) are learned from their
first `ERROR` and not sent again to that stick, so they are neither logged every poll nor
left standing as the last error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from failberry.aio import within
from failberry.modem.at import AtChannel, SerialPort
from failberry.modem.errors import AtError, AtTimeout, CmeError, PortGone
from failberry.modem.parsers import (
    REG_PREFIXES,
    Registration,
    SimState,
    parse_cops,
    parse_cpin,
    parse_csq,
    parse_identity,
    parse_registration,
    payload_of,
    pick,
    split_fields,
)
from failberry.modem.simcheck import PinAnswer, pin_settled, sim_from_cme

LOG = logging.getLogger(__name__)

CME_NOT_SUPPORTED = 4
# TS 27.007 8.65 +CPINR: the SIM's remaining PIN tries, where the stick has it.
CPINR = 'AT+CPINR="SIM PIN"'


def unsupported(exc: AtError) -> bool:
    """Does this failure say "this stick does not know the command" (not "not now")?"""
    if isinstance(exc, CmeError):
        return exc.code == CME_NOT_SUPPORTED
    return exc.result.upper() in ("ERROR", "COMMAND NOT SUPPORT")


class Session:
    """Commands over the driver's current channel; `info` collects what the stick said."""

    def __init__(self, at_timeout: float, info: dict[str, Any]) -> None:
        self.channel: AtChannel | None = None
        self.at_timeout = at_timeout
        self.info = info
        self.unknown: dict[str, set[str]] = {}  # per stick (IMEI): commands it lacks
        self.stick = ""
        self.zcdrun_sent: set[str] = set()
        self.inflight: set[str] = set()
        self.extra_setup: list[str] = []  # what others on the port need set after each open

    async def cmd(self, command: str, timeout: float | None = None,
                  label: str | None = None, resync: bool = True) -> list[str]:
        """One command; PortGone when no port is open."""
        if self.channel is None:
            raise PortGone("modem", "port not open")
        return await self.channel.command(command, timeout or self.at_timeout, label, resync)

    async def optional(self, command: str, learn: bool = False) -> list[str] | None:
        """A command whose failure is not a fault: None if it failed or timed out (the
        channel then resynchronises before the next one). With `learn`, a stick that does
        not know the command is never asked again."""
        known = self.unknown.setdefault(self.stick, set())
        if command in known or command in self.inflight:
            return None  # unknown to this stick, or already asked by a concurrent poll
        self.inflight.add(command)
        try:
            return await self.cmd(command)
        except AtError as exc:
            if learn and unsupported(exc):
                known.add(command)
                LOG.info("modem: this stick does not know %s; not sending it again", command)
            else:
                LOG.info("modem: %s", exc)
                self.info["last_error"] = str(exc)
            return None
        except AtTimeout as exc:
            LOG.info("modem: %s", exc)
            self.info["last_error"] = str(exc)
            return None
        finally:
            self.inflight.discard(command)

    async def identity(self, command: str) -> str:
        """The free-text answer of +CGMI/+CGMM/+CGSN, or "" if none came."""
        lines = await self.optional(command)
        try:
            return parse_identity(command, lines or [])
        except ValueError:
            return ""

    async def setup(self, port: str) -> tuple[str, str]:
        """Echo off, verbose errors, identity, registration URCs on: (maker, model)."""
        await self.cmd("ATE0")
        self.stick = await self.identity("AT+CGSN") or port
        await self.optional("AT+CMEE=1", learn=True)
        maker = await self.identity("AT+CGMI")
        model = await self.identity("AT+CGMM")
        self.info.update(manufacturer=maker, model=model)
        if "ZTE" in maker.upper() and self.stick not in self.zcdrun_sent:
            # ZTE sticks boot as a CD-ROM until told otherwise; once per stick is enough
            # (it is stored in the stick), and usb-modeswitch handles the first boot.
            self.zcdrun_sent.add(self.stick)
            LOG.info("modem: sending AT+ZCDRUN=8 so the ZTE stick stops its CD-ROM")
            await self.optional("AT+ZCDRUN=8", learn=True)
        for kind in REG_PREFIXES:  # location-reporting URCs (n=2); 3G sticks lack CEREG
            await self.optional(f"AT{kind}=2", learn=True)
        for command in self.extra_setup:  # AT+CNMI for the SMS code: +CMTI on this port
            await self.optional(command, learn=True)
        # The channel may still be out of step after an optional command timed out: make
        # sure the modem talks before saying the port is ready (AtTimeout if it does not).
        if self.channel is not None and self.channel.stale:
            await self.channel.resync(self.at_timeout)
        return maker, model

    async def sim(self) -> SimState:
        """What `AT+CPIN?` says; AtTimeout/PortGone when there is no answer at all."""
        try:
            lines = await self.cmd("AT+CPIN?", 2 * self.at_timeout)
        except AtError as exc:
            self.info["last_error"] = str(exc)
            return sim_from_cme(exc.code if isinstance(exc, CmeError) else None)
        return pick(lines, "+CPIN", parse_cpin) or SimState.OTHER

    async def pin_tries(self) -> int | None:
        """The SIM's remaining PIN tries (`+CPINR: SIM PIN,<n>,<default>`), None if unknown."""
        lines = await self.optional(CPINR, learn=True)
        for line in lines or []:
            if line.upper().startswith("+CPINR"):
                with contextlib.suppress(ValueError, IndexError):
                    return int(split_fields(payload_of(line, "+CPINR"))[1].text)
        return None

    async def enter_pin(self, pin: str) -> PinAnswer:
        """Send the PIN once; read the SIM's PIN counter before, and after when the answer
        alone does not tell (`simcheck.pin_verdict` says what it all means)."""
        before = await self.pin_tries()
        try:
            await self.cmd(f'AT+CPIN="{pin}"', 2 * self.at_timeout, label="AT+CPIN=<pin>")
        except CmeError as exc:
            answer = PinAnswer(str(exc), exc.code, before)
        except (AtError, AtTimeout) as exc:
            answer = PinAnswer(str(exc), None, before)
        else:
            return PinAnswer(before=before)
        if pin_settled(answer):
            return answer
        try:
            after = await self.pin_tries()
        except (AtTimeout, PortGone):
            after = None
        return replace(answer, after=after)

    async def registrations(self) -> list[Registration]:
        """Every registration the stick reports (+CREG?, +CGREG?, +CEREG? it knows)."""
        out = []
        for kind in REG_PREFIXES:
            lines = await self.optional(f"AT{kind}?", learn=True) or []
            reg = pick(lines, kind + ":", lambda ln: parse_registration(ln, read_reply=True))
            if reg is not None:
                out.append(reg)
        return out

    async def signal_and_operator(self) -> None:
        """Refresh signal (dBm) and operator in `info`."""
        sig = pick(await self.optional("AT+CSQ") or [], "+CSQ", parse_csq)
        if sig is not None:
            self.info["signal_dbm"] = sig.dbm
        op = pick(await self.optional("AT+COPS?") or [], "+COPS", parse_cops)
        self.info["operator"] = op.name if op is not None else None


async def command_mode(opener: Callable[[str], SerialPort], port: str, guard: float = 1.0,
                       timeout: float = 1.0) -> bool:
    """Bring `port` back from data mode after pppd left it there (its peer file says `local`,
    so pppd drops no DTR): drop DTR, then if `AT` gets no answer the `+++` escape with its
    guard time of silence before and after (V.250 S12, 1 s by default), then `ATH`. True
    when the port answers `AT` at the end."""
    try:
        serial = opener(port)
    except (PortGone, OSError) as exc:
        LOG.info("modem: cannot reopen %s after pppd: %s", port, exc)
        return False
    channel = AtChannel(serial, port, lambda _line: None)
    channel.start()
    try:
        await _drop_dtr(serial)
        if await channel.probe(min(0.5, timeout)):
            with contextlib.suppress(AtError, AtTimeout):
                await channel.command("ATH", timeout)
            return True
        LOG.info("modem: %s is still in data mode; sending +++ with %gs guard time", port,
                 guard)
        await asyncio.sleep(guard)
        serial.write(b"+++")  # alone, no CR: the escape is these three characters
        await asyncio.sleep(guard * 1.2)
        with contextlib.suppress(AtError, AtTimeout):
            await channel.command("ATH", timeout)
        ok = await channel.probe(timeout)
        LOG.info("modem: %s %s", port, "back in command mode" if ok else
                 "does not answer AT after +++ and ATH")
        return ok
    except (PortGone, OSError):
        return False
    finally:
        channel.close()


async def command_mode_within(opener: Callable[[str], SerialPort], port: str, guard: float,
                              timeout: float, left: float) -> bool:
    """`command_mode` given at most `left` seconds (on stop: it must not hang on a dead
    stick); False if it did not finish in time."""
    ok = False
    if left > 0:
        with contextlib.suppress(TimeoutError):
            ok = await within(command_mode(opener, port, guard, timeout), left)
    LOG.info("modem: on stop, %s %s", port, "is back in command mode" if ok
             else "is left in data mode (no time to escape it)")
    return ok


async def _drop_dtr(serial: SerialPort) -> bool:
    """Drop DTR for a moment (most sticks hang up on it); False where the port has no DTR
    (a pty)."""
    try:
        serial.dtr = False  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
        serial.dtr = True  # type: ignore[attr-defined]
    except (AttributeError, OSError) as exc:
        LOG.debug("modem: cannot drop DTR: %s", exc)
        return False
    return True
