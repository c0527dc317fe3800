"""SMS through the stick (3GPP TS 27.005): sending in text mode when the text allows it, in
PDU mode (GSM 7-bit or UCS2, concatenated when long) otherwise; reading the stored messages
in PDU mode (`AT+CMGL=4`, SMS-DELIVER, TS 23.040 9.2.2.1) and deleting each after."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass

from failberry.alerts.at_session import AtSession, AtSessionProvider
from failberry.alerts.channel import ChannelError
from failberry.alerts.model import Alert
from failberry.alerts.outbox import Policy
from failberry.alerts.sms_pdu import (
    gsm7_decode,
    submit_pdus,
    text_mode_ok,
    unpack_septets,
)
from failberry.modem.errors import ModemError

LOG = logging.getLogger(__name__)

SEND_TIMEOUT = 60.0  # the network's answer to AT+CMGS can take tens of seconds
LIST_TIMEOUT = 20.0


@dataclass(frozen=True)
class Incoming:
    """A stored SMS: its index in the modem's memory, the sender and the text."""

    index: int
    sender: str
    text: str


def _semi_octets(data: bytes, digits: int) -> str:
    out = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data)
    return out[:digits]


def parse_deliver(hex_pdu: str) -> tuple[str, str]:
    """(sender, text) of an SMS-DELIVER PDU that starts with its SMSC field; ValueError if it
    is not one. A concatenation header is skipped (commands fit one SMS)."""
    b = bytes.fromhex(hex_pdu.strip())
    i = 1 + b[0]  # the SMSC field
    first = b[i]
    if first & 0x03 != 0x00:
        raise ValueError("not an SMS-DELIVER")
    oa_digits, toa = b[i + 1], b[i + 2]
    oa_len = (oa_digits + 1) // 2
    oa = b[i + 3:i + 3 + oa_len]
    if toa & 0x70 == 0x50:  # alphanumeric sender (a company name): GSM 7-bit
        sender = gsm7_decode(unpack_septets(oa, oa_digits * 4 // 7))
    else:
        sender = ("+" if toa & 0x70 == 0x10 else "") + _semi_octets(oa, oa_digits)
    j = i + 3 + oa_len
    dcs = b[j + 1]
    udl = b[j + 9]  # after PID, DCS and the 7-octet time stamp
    ud = b[j + 10:]
    udh_len = ud[0] + 1 if first & 0x40 else 0
    alphabet = (dcs >> 2) & 0x03 if dcs & 0xC0 == 0 else (2 if dcs & 0xF0 == 0xE0 else 0)
    if alphabet == 2:
        text = ud[udh_len:udl].decode("utf-16-be", "replace")
    elif alphabet == 1:
        text = ud[udh_len:udl].decode("latin-1")
    else:
        fill = (7 - (udh_len * 8) % 7) % 7 if udh_len else 0
        count = udl - (udh_len * 8 + fill) // 7
        text = gsm7_decode(unpack_septets(ud[udh_len:], count, fill))
    return sender, text


def parse_cmgl(lines: list[str]) -> list[Incoming]:
    """`+CMGL: <index>,<stat>,[<alpha>],<length>` each followed by its PDU line."""
    out: list[Incoming] = []
    index: int | None = None
    for line in lines:
        if line.startswith("+CMGL:"):
            try:
                index = int(line[6:].split(",")[0])
            except ValueError:
                index = None
            continue
        if index is None:
            continue
        try:
            sender, text = parse_deliver(line)
        except (ValueError, IndexError) as e:
            LOG.warning("stored SMS %d unreadable (%s); deleting it", index, e)
            sender, text = "", ""
        out.append(Incoming(index, sender, text))
        index = None
    return out


class SmsModem:
    """SMS operations over the provider's session, one at a time (each sets the message
    format it needs, and they must not interleave)."""

    def __init__(self, provider: AtSessionProvider) -> None:
        self.provider = provider
        self.lock = asyncio.Lock()
        self._refs = itertools.count(1)
        self._prepared: AtSession | None = None

    async def _session(self) -> AtSession:
        session = await self.provider.acquire()
        if session is None:
            raise ChannelError("sms", "no AT port for SMS (modem absent or not set up)")
        if session is not self._prepared:
            self._prepared = session
            try:
                # New messages: stored, announced by +CMTI (TS 27.005 3.4.1).
                await session.command("AT+CNMI=2,1,0,0,0")
            except ModemError as e:
                LOG.info("AT+CNMI refused (%s); new SMS are found by polling", e)
        return session

    async def send(self, number: str, text: str) -> None:
        """One SMS (or a concatenated one) to `number`; ChannelError/ModemError on failure."""
        async with self.lock:
            s = await self._session()
            if text_mode_ok(text):
                await s.command("AT+CMGF=1")
                await s.command('AT+CSCS="IRA"')
                await s.submit(f'AT+CMGS="{number}"', text, SEND_TIMEOUT)
                return
            await s.command("AT+CMGF=0")
            for pdu in submit_pdus(number, text, next(self._refs) & 0xFF):
                await s.submit(f"AT+CMGS={pdu.length}", pdu.hex, SEND_TIMEOUT)

    async def receive(self) -> list[Incoming]:
        """Every stored message, each deleted once read."""
        async with self.lock:
            s = await self._session()
            await s.command("AT+CMGF=0")
            found = parse_cmgl(await s.command("AT+CMGL=4", LIST_TIMEOUT))
            for msg in found:
                await s.command(f"AT+CMGD={msg.index}")
            return found


class SmsChannel:
    """Alerts by SMS to one number."""

    def __init__(self, modem: SmsModem, number: str, policy: Policy) -> None:
        self.name = f"sms:{number}"
        self.modem = modem
        self.number = number
        self.policy = policy

    async def send(self, alert: Alert, text: str) -> None:
        """Send; ChannelError when the modem is absent or refuses (+CMS ERROR)."""
        try:
            await self.modem.send(self.number, text)
        except ModemError as e:
            raise ChannelError(self.name, str(e)) from None
        except ChannelError as e:
            raise ChannelError(self.name, e.reason) from None
