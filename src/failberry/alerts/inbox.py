"""Reading SMS commands: on a +CMTI URC (a new message stored) or every minute, every stored
message is read and deleted; commands from allowlisted numbers are carried out and answered.
`failover`/`failback` publish `ForceUplink` for the network part; `reboot` answers first,
then runs the reboot seam."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from failberry.aio import within
from failberry.alerts import commands
from failberry.alerts.channel import ChannelError
from failberry.alerts.sms import Incoming, SmsModem
from failberry.bus import Bus, ForceUplink
from failberry.modem.errors import ModemError

LOG = logging.getLogger(__name__)

POLL_EVERY = 60.0
REBOOT_DELAY = 3.0  # let the answer leave before the box goes down
REPLIES_PER_HOUR = 10  # per sender: an auto-responder on the list must not loop with us


class Inbox:
    """SMS commands in, answers out."""

    def __init__(self, sms: SmsModem, allowlist: tuple[str, ...], bus: Bus,
                 doc: Callable[[], dict[str, Any]], *, reboot: Callable[[str], None] | None,
                 force_for: float, poll_every: float = POLL_EVERY) -> None:
        self.sms = sms
        self.allowlist = allowlist
        self.bus = bus
        self.doc = doc
        self.reboot = reboot
        self.force_for = force_for
        self.poll_every = poll_every
        self.counts: Counter[str] = Counter()
        self._new = asyncio.Event()
        self._replies: dict[str, list[float]] = {}
        sms.provider.on_urc(self.urc)

    def urc(self, line: str) -> None:
        """+CMTI: "SM",3 — a message was stored: read now."""
        if line.upper().startswith("+CMTI:"):
            self._new.set()

    async def run(self) -> None:
        """Read whenever told or polled."""
        while True:
            self._new.clear()
            try:
                for msg in await self.sms.receive():
                    await self.handle(msg)
            except (ModemError, ChannelError) as e:
                LOG.debug("cannot read SMS now: %s", e)
            with contextlib.suppress(TimeoutError):
                await within(self._new.wait(), self.poll_every)

    async def handle(self, msg: Incoming) -> None:
        """Carry out one message's command if its sender may give it."""
        cmd = commands.parse(msg.text)
        if not commands.allowed(msg.sender, self.allowlist):
            self.counts["ignored"] += 1
            LOG.warning("ignoring SMS from %s (not in alerts.sms_commands_from): %r",
                        msg.sender or "an unknown sender", msg.text[:40])
            return
        if cmd is None:
            self.counts["ignored"] += 1
            LOG.warning("ignoring SMS from %s: not a command: %r", msg.sender, msg.text[:40])
            return
        self.counts[cmd.verb] += 1
        LOG.info("SMS command %r from %s", msg.text.strip()[:40], msg.sender)
        if cmd.verb == "status":
            await self.reply(msg.sender, commands.summary(self.doc()))
        elif cmd.verb in ("failover", "failback"):
            uplink = "mobile" if cmd.verb == "failover" else "wired"
            seconds = cmd.minutes * 60 if cmd.minutes else self.force_for
            self.bus.publish(ForceUplink(uplink, seconds, f"SMS {cmd.verb} from {msg.sender}"))
            await self.reply(msg.sender, f"failberry: {uplink} forced for "
                                         f"{seconds / 60:.0f} min")
        elif cmd.verb == "reboot":
            if self.reboot is None:
                await self.reply(msg.sender, "failberry: reboot is not available")
                return
            await self.reply(msg.sender, f"failberry: rebooting in {REBOOT_DELAY:.0f}s")
            await asyncio.sleep(REBOOT_DELAY)
            LOG.warning("rebooting: SMS command from %s", msg.sender)
            self.reboot(f"SMS command from {msg.sender}")

    async def reply(self, number: str, text: str) -> None:
        """Answer, at most REPLIES_PER_HOUR times an hour per number."""
        now = time.monotonic()
        recent = [t for t in self._replies.get(number, []) if now - t < 3600]
        if len(recent) >= REPLIES_PER_HOUR:
            LOG.warning("not answering %s: %d answers in the last hour", number, len(recent))
            return
        self._replies[number] = [*recent, now]
        try:
            await self.sms.send(number, text)
        except (ModemError, ChannelError) as e:
            LOG.warning("cannot answer %s: %s", number, e)
