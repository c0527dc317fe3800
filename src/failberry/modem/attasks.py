"""The driver's AT conversation: open and set up a port, ask for the SIM, enter the PIN, read
the registration, and take in the URCs. Each runs as a task of the driver's (`Driver`
inherits them) and posts its outcome as an event for the machine; an outcome from a port that
was closed meanwhile (`gen` moved on) is dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from failberry.config import ModemConfig
from failberry.modem import events as ev
from failberry.modem.at import AtChannel, SerialPort
from failberry.modem.datapath import DataRunner
from failberry.modem.errors import AtError, AtTimeout, PortGone
from failberry.modem.link import best_registration
from failberry.modem.parsers import REG_PREFIXES, Registration, RegStat, parse_registration
from failberry.modem.parsers import parse_vendor_access_tech as vendor_access_tech
from failberry.modem.session import Session
from failberry.modem.simcheck import PinAnswer, pin_verdict

LOG = logging.getLogger("failberry.modem.driver")  # one logger for the driver's lines


class AtTasks:
    """The AT tasks; the driver provides the state they read and write."""

    cfg: ModemConfig
    opener: Callable[[str], SerialPort]
    ppp: DataRunner
    at_timeout: float
    session: Session
    gen: int
    info: dict[str, Any]
    last_reg: dict[str, RegStat]
    urc_listeners: list[Callable[[str], None]]
    ready_channel: AtChannel | None
    channel: AtChannel | None

    def post(self, event: ev.Event) -> None:
        """Queue an event for the machine (the driver's)."""
        raise NotImplementedError

    def _post_if(self, gen: int, event: ev.Event) -> None:
        raise NotImplementedError

    async def _open(self, port: str, gen: int) -> None:
        try:
            serial = self.opener(port)
        except (PortGone, OSError) as exc:
            self._post_if(gen, ev.PortLost(exc.reason if isinstance(exc, PortGone)
                                           else str(exc)))
            return
        if gen != self.gen:
            serial.close()
            return
        self.gen += 1
        gen = self.gen
        self.last_reg.clear()  # a fresh port: the first URC of each kind counts again
        channel = AtChannel(serial, port, self._urc,
                            lambda gone: self._post_if(gen, ev.PortLost(gone.reason)))
        self.channel = channel
        channel.start()
        try:
            for _ in range(3):  # a stick that just re-enumerated may need a moment
                if await channel.probe(min(1.0, self.at_timeout)):
                    break
            else:
                self._post_if(gen, ev.AtFailed("AT", "no answer to AT", silent=True))
                return
            maker, model = await self.session.setup(port)
            if gen == self.gen:
                self.ready_channel = channel
            self._post_if(gen, ev.PortReady(maker, model))
        except AtTimeout as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
        except PortGone:
            pass  # on_gone already posted PortLost
        except AtError as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc)))

    async def _query_sim(self, gen: int) -> None:
        try:
            sim = await self.session.sim()
        except AtTimeout as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
            return
        except PortGone as exc:
            self._post_if(gen, ev.AtFailed("AT+CPIN?", str(exc)))
            return
        self.info["sim"] = sim.value
        self._post_if(gen, ev.SimReport(sim))

    async def _enter_pin(self, gen: int) -> None:
        pin = self.cfg.pin.reveal() if self.cfg.pin is not None else ""
        try:
            answer = await self.session.enter_pin(pin)
        except PortGone as exc:
            answer = PinAnswer(str(exc))
        event = pin_verdict(answer)
        if isinstance(event, ev.PinAccepted):
            await asyncio.sleep(1.0)  # the SIM needs a moment before +CPIN? says READY
        self._post_if(gen, event)

    async def _query_registration(self, gen: int, report: bool = True) -> None:
        try:
            regs = await self.session.registrations()
        except AtTimeout as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
            return
        except PortGone:
            return
        best = best_registration(regs)
        if best is None:
            return
        self._note_registration(best)
        if report:
            self._post_if(gen, ev.RegistrationReport(best))

    def _note_registration(self, reg: Registration) -> None:
        self.info["registration"] = reg.stat.name.lower()
        if reg.access_tech:
            self.info["access_tech"] = reg.access_tech

    def _urc(self, line: str) -> None:
        head = line.partition(":")[0].strip().upper()
        self.ppp.urc(line)
        for listener in self.urc_listeners:
            listener(line)
        try:
            if head in REG_PREFIXES:
                # Both shapes arrive unsolicited: `+CREG: <stat>[,...]` as TS 27.007 says,
                # and `+CREG: <n>,<stat>[,...]` from firmware that reuses its read reply.
                reg = parse_registration(line)
                self._note_registration(reg)
                if self.last_reg.get(reg.kind) is not reg.stat:  # storms repeat themselves
                    self.last_reg[reg.kind] = reg.stat
                    self.post(ev.RegistrationReport(reg))
            elif head in ("+ZPAS", "^MODE"):
                self.info["access_tech"] = vendor_access_tech(line)
        except ValueError as exc:
            LOG.debug("modem: unreadable URC: %s", exc)
