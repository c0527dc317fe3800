"""The alerts part: bus events in, messages out on every configured channel, each through
its own outbox (hold-down, rate limit, quiet hours, retries), the lot saved in one state file
so a restart loses nothing; SMS commands read from the stick and answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failberry.aio import within
from failberry.alerts import translate
from failberry.alerts.channel import Channel, ChannelError
from failberry.alerts.forecast import DataWatch
from failberry.alerts.inbox import Inbox
from failberry.alerts.model import Alert
from failberry.alerts.outbox import Outbox, local_minutes
from failberry.alerts.sms import SmsModem
from failberry.alerts.store import StateFile
from failberry.bus import ActiveUplinkChanged, Bus, DyndnsBlocked, ModemStateChanged
from failberry.config import Config
from failberry.errors import FailberryError
from failberry.pihealth.events import HealthAlert
from failberry.reports import AlertsReport, ChannelReport, DataForecast, RecentAlert
from failberry.status import Status, jsonable, modem_view, network_view, report_alerts
from failberry.timegate import TimeGate, open_gate

LOG = logging.getLogger(__name__)

NAME = "alerts"
TICK = 1.0
DATA_EVERY = 30.0
RECENT = 20


@dataclass(frozen=True)
class Clocks:
    """Time and the machine facts the part reads."""

    wall: Callable[[], float] = time.time
    minutes: Callable[[float], int] = local_minutes
    boot_time: Callable[[], float | None] = translate.boot_time


@dataclass(frozen=True)
class Kept:
    """What a crashed alerts part hands the one built in its place."""

    translator: translate.Translator
    errors: Mapping[str, str]  # channel -> its last error
    sms_commands: Mapping[str, int]


class AlertsPart:
    """Tells the admin; reports as `alerts`."""

    name = NAME
    deadline = 60.0

    def __init__(self, cfg: Config, status: Status, bus: Bus, channels: Sequence[Channel], *,
                 state_path: Path, sms: SmsModem | None = None,
                 reboot: Callable[[str], None] | None = None, clocks: Clocks | None = None,
                 tick: float = TICK, data_every: float = DATA_EVERY,
                 kept: Kept | None = None, time_gate: TimeGate | None = None) -> None:
        self.cfg = cfg
        # A channel with `needs_time` (an HTTPS webhook: TLS checks certificate dates) sends
        # nothing before the clock is good (failberry.timegate); None: never wait.
        self.time_gate = time_gate or open_gate()
        self._time_wait: dict[str, str] = {}  # channel -> why it waits for the time
        self.status = status
        self.bus = bus
        self.channels = list(channels)
        self.clocks = clocks or Clocks()
        self.tick = tick
        self.data_every = data_every
        self.state = StateFile(state_path)
        self.outboxes = {c.name: Outbox(c.policy, self.clocks.minutes) for c in self.channels}
        self._wake = {c.name: asyncio.Event() for c in self.channels}
        self._errors: dict[str, str] = {}
        self.translator = (kept.translator if kept else
                           translate.Translator(cfg.alerts.link_lost_after))
        self.data = DataWatch(cfg.alerts.cap_warnings, cfg.failover.cap_reset_day)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.reboot_told: float | None = None
        self.inbox = (Inbox(sms, cfg.alerts.sms_commands_from, bus, self._summary_doc,
                            reboot=reboot, force_for=cfg.alerts.sms_force_for)
                      if sms is not None else None)
        # Subscribe now, not in run(): events published before the loop starts us count (the
        # supervisor closes them when the part stops, or hands them to its successor).
        self._uplinks = bus.subscribe(ActiveUplinkChanged)
        self._modem = bus.subscribe(ModemStateChanged)
        self._health = bus.subscribe(HealthAlert)
        self._dyndns = bus.subscribe(DyndnsBlocked)
        self._load()
        if kept is not None:
            self._errors = dict(kept.errors)
            if self.inbox is not None:
                self.inbox.counts.update(kept.sms_commands)

    def handover(self) -> Kept:
        """What the part built after this one crashed keeps besides the state file: what the
        translation knows (since when the mobile link is lost), the channels' last errors and
        the SMS command counts."""
        return Kept(self.translator, dict(self._errors),
                    dict(self.inbox.counts) if self.inbox is not None else {})

    # -- state

    def _load(self) -> None:
        data = self.state.load()
        for name, raw in (data.get("channels") or {}).items():
            if name in self.outboxes and isinstance(raw, dict):
                self.outboxes[name].restore(raw)
        self.data.told = {str(t) for t in data.get("told") or []}
        told = data.get("reboot_told")
        self.reboot_told = float(told) if isinstance(told, int | float) else None
        for item in data.get("recent") or []:
            if isinstance(item, dict):
                self.recent.append(item)
        queued = sum(len(o.ready) + len(o.held) for o in self.outboxes.values())
        if queued:
            LOG.info("alerts: %d message(s) waiting from before the restart", queued)

    def save(self) -> None:
        """Write the state file."""
        self.state.save({"channels": {n: o.to_json() for n, o in self.outboxes.items()},
                         "told": sorted(self.data.told), "reboot_told": self.reboot_told,
                         "recent": list(self.recent)})

    # -- telling

    def tell(self, alerts: Sequence[Alert]) -> None:
        """Offer alerts to every channel."""
        if not alerts:
            return
        now = self.clocks.wall()
        for alert in alerts:
            LOG.info("alert %s (%s): %s", alert.event.value, alert.severity.name.lower(),
                     alert.message)
            self.recent.append({"at": alert.at, "event": alert.event.value,
                                "severity": alert.severity.name.lower(),
                                "message": alert.message})
            for name, box in self.outboxes.items():
                how = box.offer(alert, now)
                if how != "queued":
                    LOG.debug("alert %s on %s: %s", alert.event.value, name, how)
                self._wake[name].set()
        self.save()
        self.report()

    async def _sender(self, channel: Channel) -> None:
        box, wake = self.outboxes[channel.name], self._wake[channel.name]
        if getattr(channel, "needs_time", False) and self.time_gate.waiting:
            self._time_wait[channel.name] = self.time_gate.why
            self.report()
            await self.time_gate.wait()
            del self._time_wait[channel.name]
            self.report()
        while True:
            wake.clear()
            now = self.clocks.wall()
            entry = box.take(now)
            if entry is None:
                at = box.wake_at(now)
                timeout = None if at is None else max(0.05, at - now)
                with contextlib.suppress(TimeoutError):
                    await within(wake.wait(), timeout)
                continue
            try:
                await channel.send(entry.alert, entry.text())
            except (ChannelError, FailberryError, OSError) as e:
                reason = e.reason if isinstance(e, ChannelError) else str(e)
                self._errors[channel.name] = reason
                again = box.failed(entry, self.clocks.wall(), reason)
                LOG.warning("alert %s not sent on %s: %s; %s", entry.alert.event.value,
                            channel.name, reason,
                            f"retrying in {entry.next_try - self.clocks.wall():.0f}s"
                            if again else "giving it up")
            else:
                box.sent(entry, self.clocks.wall())
                self._errors.pop(channel.name, None)
                LOG.info("alert %s sent on %s", entry.alert.event.value, channel.name)
            self.save()
            self.report()

    # -- sources

    async def _pump(self, queue: asyncio.Queue[Any],
                    convert: Callable[[Any], list[Alert]]) -> None:
        while True:
            self.tell(convert(await queue.get()))

    async def _ticker(self) -> None:
        last_data = -self.data_every
        while True:
            mono = time.monotonic()
            now = self.clocks.wall()
            self.tell(self.translator.check_lost(now))
            if mono - last_data >= self.data_every:
                last_data = mono
                self.tell(self.check_data(now))
            self.report()
            await asyncio.sleep(self.tick)

    def check_data(self, now: float) -> list[Alert]:
        """The network part's counters against the cap."""
        net = network_view(self.status)
        if net is None or net.data is None:
            return []
        health = self._health_bytes()
        return self.data.observe(net.data.used_bytes, health, net.data.cap_bytes, now)

    def _health_bytes(self) -> int:
        net = network_view(self.status)
        return 0 if net is None else net.report.health_check_bytes

    def check_reboot(self) -> None:
        """Tell once if this boot followed a reboot we asked for."""
        path = Path(self.cfg.paths.state_dir) / "reboots.json"
        alert, self.reboot_told = translate.rebooted(
            translate.read_reboots(path), self.clocks.boot_time(), self.reboot_told,
            self.clocks.wall())
        if alert is not None:
            self.tell([alert])

    def _summary_doc(self) -> dict[str, Any]:
        from failberry.web.health import decide

        net = network_view(self.status)
        modem = modem_view(self.status)
        v = decide(self.status, self.cfg.failover.mode)
        return {"status": "ok" if v.ok else "fail",
                "active_uplink": net.active_uplink if net else None,
                "uplinks": {n: {"up": u.up} for n, u in net.uplinks.items()} if net else {},
                "modem": None if modem is None else {"state": modem[0], **jsonable(modem[1])},
                "data": None if net is None or net.data is None
                else {"used_bytes": net.data.used_bytes + self._health_bytes(),
                      "cap_bytes": net.data.cap_bytes}}

    # -- status

    def report(self) -> None:
        """The status snapshot's `alerts` entry."""
        channels = {name: ChannelReport(
            sent=box.counts.sent, failed=box.counts.failed, dropped=box.counts.dropped,
            queued=len(box.ready), held=len(box.held), last_error=self._errors.get(name),
            waiting_for=(f"time: {self._time_wait[name]}" if name in self._time_wait
                         else None))
            for name, box in self.outboxes.items()}
        fc = self.data.last
        report = AlertsReport(
            channels=channels,
            recent=tuple(RecentAlert(float(r.get("at") or 0.0), str(r.get("event", "")),
                                     str(r.get("severity", "")), str(r.get("message", "")))
                         for r in list(self.recent)[-10:]),
            health_check_bytes=self._health_bytes(),
            forecast=None if fc is None else DataForecast(
                projected_bytes=fc.projected, reach_at=fc.reach_at, period_end=fc.period_end,
                bytes_per_day=round(fc.rate * 86400),
                health_bytes_per_day=round(fc.health_rate * 86400)),
            sms_commands=dict(self.inbox.counts) if self.inbox is not None else None)
        waiting = any(c.queued or c.held for c in channels.values())
        state = "sending" if waiting else "ok"
        if self._time_wait and waiting:
            state = "waiting for time"
        report_alerts(self.status, state, report)

    async def run(self) -> None:
        """Run until cancelled."""
        LOG.info("alerts: channels %s", ", ".join(self.outboxes) or "none")
        self.check_reboot()
        self.report()
        coros: list[tuple[str, Any]] = [
            ("uplinks", self._pump(self._uplinks, lambda e: self.translator.uplink(
                e, self.clocks.wall()))),
            ("modem", self._pump(self._modem, lambda e: self.translator.modem(
                e, self.clocks.wall()))),
            ("health", self._pump(self._health, lambda e: [translate.health(e)])),
            ("dyndns", self._pump(self._dyndns, lambda e: [translate.dyndns(
                e, self.clocks.wall())])),
            ("ticker", self._ticker())]
        coros += [(f"send-{c.name}", self._sender(c)) for c in self.channels]
        if self.inbox is not None:
            coros.append(("inbox", self.inbox.run()))
        tasks = [asyncio.create_task(c, name=f"alerts-{n}") for n, c in coros]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Nothing to save here: every change was saved as it happened (a message in
            # flight is in the file as not sent, so it goes again after a restart).
