"""The supervisor part that watches the Pi itself: power, temperature, the SD card.

Every `[pihealth] interval` it drains the kernel log, reads the rpi_volt alarm, the thermal
zones and the root mount, reports under `pihealth` in the status snapshot, and publishes a
rate-limited `HealthAlert` on the bus for what the admin should hear. It also follows
`ModemStateChanged`: when the modem's recovery ladder climbs within a minute of under-voltage,
it says so, since a stick browning out on a weak supply looks like a wedged modem."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failberry.aio import within
from failberry.bus import Bus, ModemStateChanged
from failberry.clock import Clock, SystemClock
from failberry.config import Config, PihealthConfig
from failberry.parts import Seams
from failberry.pihealth.events import AlertKind, HealthAlert, Severity
from failberry.pihealth.kmsg import DEV_KMSG, KmsgSource, Record, open_source
from failberry.pihealth.sysfs import Sysfs, root_mount
from failberry.pihealth.tracker import ErrorLog, Heat, Line, PowerTracker, RateLimit, classify
from failberry.reports import (
    PiAlert,
    PiHealthReport,
    PowerReport,
    StorageReport,
    TemperatureReport,
)
from failberry.status import PIHEALTH, Status, jsonable, report_pihealth

LOG = logging.getLogger(__name__)

# The modem states that mean the recovery ladder climbs, and how the log line names them.
LADDER = {"recovering": "modem recovery", "resetting": "modem reset", "rebooting": "reboot"}
CORRELATE = 60.0  # under-voltage this recent is named when the ladder climbs
MAX_ALERTS = 5  # kept in the status report


@dataclass(frozen=True)
class Kept:
    """What a crashed Pi health part hands the one built in its place."""

    limit: RateLimit
    alerts: tuple[HealthAlert, ...]


class PiHealthPart:
    """Under-voltage, temperature and SD card health, from sysfs and the kernel log."""

    name = PIHEALTH

    def __init__(self, status: Status, bus: Bus, cfg: PihealthConfig | None = None, *,
                 sys_root: Path = Path("/sys"), kmsg: Path = DEV_KMSG,
                 mounts: Path = Path("/proc/mounts"), clock: Clock | None = None,
                 kept: Kept | None = None) -> None:
        self.status = status
        self.bus = bus
        self.cfg = cfg or PihealthConfig()
        self.sysfs = Sysfs(sys_root)
        self.kmsg_path = kmsg
        self.mounts = mounts
        self.clock = clock or SystemClock()
        self.deadline = max(30.0, 3 * self.cfg.interval)
        self.limit = kept.limit if kept else RateLimit(self.cfg.alert_interval)
        self.alerts: collections.deque[HealthAlert] = collections.deque(
            kept.alerts if kept else (), maxlen=MAX_ALERTS)
        # Subscribe now, not in run(): a climb published before the loop starts us still counts
        # (the supervisor closes it when the part stops, or hands it to its successor).
        self._modem = bus.subscribe(ModemStateChanged)
        self.source: KmsgSource | None = None
        # The printk clock minus ours, measured on records read the moment they arrived. The
        # printk clock is sched_clock: on a Pi it runs with the raw counter while NTP slews
        # CLOCK_MONOTONIC (minutes apart after weeks up); on x86 VMs it follows MONOTONIC.
        self._offsets: collections.deque[float] = collections.deque(maxlen=16)
        self._fresh()

    def _fresh(self) -> None:
        self.power = PowerTracker()
        self.errors = ErrorLog()
        self.heat = Heat(self.cfg.temperature_warning)
        self.kmsg_problem: str | None = None
        self.temperatures: dict[str, float] = {}
        self.throttle: dict[str, bool] | None = None
        self.root_readonly: bool | None = None
        self.root_device: str | None = None
        self._counted = 0.0
        self._greeted = False  # the alerts for what the history and first poll found
        self._history_under = False  # the kernel log's history ends in under-voltage
        self._history_errors = 0

    # -- the clocks

    def _wall(self, mono: float | None) -> float | None:
        if mono is None:
            return None
        return self.clock.time() - (self.clock.monotonic() - mono)

    def _ours(self, printk: float) -> float:
        """A kernel log timestamp on our monotonic clock."""
        return printk - (max(self._offsets) if self._offsets else 0.0)

    # -- reading

    def open(self) -> None:
        """Start afresh: open the kernel log and replay what it still holds since boot
        (counted, not alerted one by one)."""
        self.close()
        self._fresh()
        self.source, self.kmsg_problem = open_source(self.kmsg_path)
        if self.kmsg_problem is not None:
            LOG.info("kernel log not read (%s): under-voltage from sysfs only, no SD card "
                     "errors", self.kmsg_problem)
        for rec in self.source.read_new():
            self._record(rec, live=False)
        self._history_under = self.power.active
        self._history_errors = self.errors.total

    def _greet(self) -> None:
        """After the first poll: one alert for what was already wrong when we started."""
        self._greeted = True
        now = self.clock.monotonic()
        if self._history_errors:
            self._alert(AlertKind.SD_ERROR, Severity.CRITICAL,
                        f"SD card: {self._history_errors} error(s) in the kernel log since "
                        f"boot, last: {self.errors.last_text}")
        if self._history_under and self.power.since is not None:
            self._alert(AlertKind.UNDERVOLTAGE, Severity.WARNING,
                        f"under-voltage since {now - self.power.since:.0f} s; check the power "
                        "supply")

    def handover(self) -> Kept:
        """What the part built after this one crashed keeps: the alert rate limit (a crash
        loop must not repeat an alert) and the last alerts shown in the report."""
        return Kept(self.limit, tuple(self.alerts))

    def close(self) -> None:
        """Let go of the kernel log."""
        if self.source is not None:
            self.source.close()
            self.source = None

    def _record(self, rec: Record, live: bool, prompt: bool = False) -> None:
        now = self.clock.monotonic()
        if prompt and rec.at is not None:
            self._offsets.append(rec.at - now)
        kind = classify(rec.text)
        if kind is None:
            return
        at = now if rec.at is None else min(self._ours(rec.at), now)
        if kind is Line.SD_ERROR:
            self.errors.add(rec.text, at)
            if live:
                self._alert(AlertKind.SD_ERROR, Severity.CRITICAL, f"SD card: {rec.text}")
            return
        self._power(kind is Line.UNDERVOLTAGE, at, "kernel log", live)

    def _power(self, under: bool, at: float, source: str, live: bool = True) -> None:
        was = self.power.active
        if self.power.update(under, at) and live:
            self._alert(AlertKind.UNDERVOLTAGE, Severity.WARNING,
                        f"under-voltage detected ({source}; "
                        f"{self.power.events_within(at)} in the last hour); check the power "
                        "supply")
        elif was and not self.power.active and live:
            LOG.info("voltage normalised (%s)", source)

    def kmsg_ready(self) -> None:
        """The kernel log's descriptor polls readable: take the records in as they arrive."""
        if self.source is not None:
            for rec in self.source.read_new():
                self._record(rec, live=True, prompt=True)

    def drain_kmsg(self) -> None:
        """Take in the kernel log lines that arrived since the last call."""
        if self.source is None:
            self.open()
        assert self.source is not None
        for rec in self.source.read_new():
            self._record(rec, live=True)

    def poll(self) -> None:
        """One round: kernel log, power, temperature, root file system."""
        self.drain_kmsg()
        now = self.clock.monotonic()
        alarm = self.sysfs.undervoltage_alarm()
        self.throttle = self.sysfs.throttled()
        firmware = None if self.throttle is None else self.throttle["under_voltage"]
        if alarm is not None or firmware is not None:
            self._power(bool(alarm) or bool(firmware), now,
                        "rpi_volt alarm" if alarm else "firmware")
        self.temperatures = self.sysfs.temperatures()
        if self.temperatures:
            zone, hottest = max(self.temperatures.items(), key=lambda kv: kv[1])
            change = self.heat.update(hottest)
            if change:
                self._alert(AlertKind.HEAT, Severity.WARNING,
                            f"{zone} at {hottest:.1f} °C (warning at "
                            f"{self.cfg.temperature_warning:g} °C)")
            elif change is False:
                LOG.info("temperature back to %.1f °C (%s)", hottest, zone)
        mount = root_mount(self.mounts)
        readonly = None if mount is None else "ro" in mount.options
        if readonly and not self.root_readonly:
            assert mount is not None
            self._alert(AlertKind.ROOT_READONLY, Severity.CRITICAL,
                        f"the root file system ({mount.device}) is read-only; the SD card "
                        "may be failing")
        elif self.root_readonly and readonly is False:
            LOG.info("the root file system is writable again")
        self.root_readonly = readonly
        self.root_device = None if mount is None else mount.device
        if not self._greeted:
            self._greet()

    # -- the modem ladder

    def on_modem(self, ev: ModemStateChanged) -> str | None:
        """The modem moved; when its ladder climbs soon after under-voltage, say so."""
        what = LADDER.get(ev.state)
        if what is None or ev.state == ev.previous:
            return None
        self.drain_kmsg()  # the freshest facts: the brown-out line may have just arrived
        now = self.clock.monotonic()
        seen = self.power.last_seen(now)
        if seen is None or now - seen > CORRELATE:
            return None
        if self.power.since is not None:
            text = (f"{what}: under-voltage now (for {now - self.power.since:.0f} s); "
                    "check the power supply")
        else:
            text = f"{what}: under-voltage seen {now - seen:.0f} s before; check the power supply"
        LOG.warning("%s", text)
        self._alert(AlertKind.MODEM_POWER, Severity.WARNING, text, logged=True)
        return text

    # -- alerts and the report

    def _alert(self, kind: AlertKind, severity: Severity, message: str,
               logged: bool = False) -> None:
        now = self.clock.monotonic()
        held = self.limit.allow(kind.value, now)
        if held is None:
            LOG.debug("alert held back by the rate limit: %s", message)
            return
        alert = HealthAlert(kind, severity, message, self.clock.time(), held)
        if not logged:
            LOG.warning("%s%s", message, f" ({held} more held back)" if held else "")
        self.alerts.append(alert)
        self.bus.publish(alert)

    def snapshot(self) -> PiHealthReport:
        """The status report; a family the board lacks is left out."""
        now = self.clock.monotonic()
        power = None
        if self.power.seen:
            power = PowerReport(
                undervoltage=self.power.active, events_total=self.power.events_total,
                seconds_total=self._seconds_total(now),
                events_last_hour=self.power.events_within(now),
                seconds_last_hour=round(self.power.seconds_within(now), 1),
                last_seen_at=self._wall(self.power.last_seen(now)))
        temperature = None
        if self.temperatures:
            temperature = TemperatureReport(
                zones={k: round(v, 1) for k, v in self.temperatures.items()},
                max_celsius=round(max(self.temperatures.values()), 1),
                warning_celsius=self.cfg.temperature_warning, hot=self.heat.hot)
        storage = StorageReport(root_readonly=self.root_readonly,
                                root_device=self.root_device if self.root_readonly is not None
                                else None)
        if self.kmsg_problem is None:
            storage = dataclasses.replace(
                storage, errors_total=self.errors.total,
                errors_last_hour=self.errors.within(now), last_error=self.errors.last_text,
                last_error_at=self._wall(self.errors.last_at))
        return PiHealthReport(
            warnings=tuple(self.warnings()), power=power,
            throttle=None if self.throttle is None else dict(self.throttle),
            temperature=temperature, kernel_log=self.kmsg_problem,
            storage=storage if storage != StorageReport() else None,
            alerts=tuple(PiAlert(a.kind.value, a.severity.value, a.message, a.at, a.held_back)
                         for a in self.alerts))

    def detail(self) -> dict[str, Any]:
        """The report's JSON form (what `/status` shows under `pihealth`)."""
        out: dict[str, Any] = jsonable(self.snapshot())
        return out

    def _seconds_total(self, now: float) -> float:
        # A counter never goes back, even when a "normalised" line read late ends the
        # interval before the moment the last report counted to.
        self._counted = max(self._counted, round(self.power.seconds_total(now), 1))
        return self._counted

    def warnings(self) -> list[str]:
        """The conditions wrong now, in a few words each."""
        out = []
        if self.power.active:
            out.append("under-voltage")
        if self.heat.hot:
            out.append("hot")
        if self.root_readonly:
            out.append("root read-only")
        return out

    def report(self) -> None:
        """Write the status report."""
        report = self.snapshot()
        report_pihealth(self.status, "warning" if report.warnings else "ok", report)

    async def run(self) -> None:
        """Poll every interval; answer modem ladder climbs as they come."""
        loop = asyncio.get_running_loop()
        self.open()
        fd = None if self.source is None else self.source.fileno()
        if fd is not None:
            loop.add_reader(fd, self.kmsg_ready)
        try:
            while True:
                self.poll()
                self.report()
                until = loop.time() + self.cfg.interval
                while (left := until - loop.time()) > 0:
                    try:
                        ev = await within(self._modem.get(), left)
                    except TimeoutError:
                        break
                    if self.on_modem(ev) is not None:
                        self.report()
        finally:
            if fd is not None:
                loop.remove_reader(fd)
            self.close()


def build(cfg: Config, seams: Seams) -> PiHealthPart:
    """The part reading the real /sys, /dev/kmsg and /proc/mounts."""
    return PiHealthPart(seams.status, seams.bus, cfg.pihealth,
                        kept=seams.kept if isinstance(seams.kept, Kept) else None)
