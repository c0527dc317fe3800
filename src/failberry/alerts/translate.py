"""Bus events into alerts: which facts are worth a message, how urgent, in what words."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from failberry.alerts.model import Alert, Event, Severity
from failberry.bus import ActiveUplinkChanged, DyndnsBlocked, ModemStateChanged
from failberry.pihealth.events import HealthAlert
from failberry.pihealth.events import Severity as PiSeverity

LOG = logging.getLogger(__name__)

REBOOT_SLACK = 900.0  # a reboot we asked for shows as a boot within this many seconds


def _hhmm(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall).strftime("%H:%M")


class Translator:
    """Keeps the little state the translation needs (was the mobile link lost, since when)."""

    def __init__(self, link_lost_after: float) -> None:
        self.link_lost_after = link_lost_after
        self._seen_uplink = False
        self._none_told = False
        self.lost_since: float | None = None  # wall time the mobile link went down
        self.lost_reason = ""
        self._lost_told = False

    def uplink(self, ev: ActiveUplinkChanged, now: float) -> list[Alert]:
        """The failover policy chose another uplink."""
        first, self._seen_uplink = not self._seen_uplink, True
        if ev.uplink is None:
            self._none_told = True
            return [Alert(Event.NO_UPLINK, Severity.CRITICAL,
                          f"no uplink works ({ev.previous or 'none'} lost): {ev.reason}", now,
                          None, ev.previous, ev.reason)]
        if ev.previous is None and first and not self._none_told:
            return []  # the first choice after start is no news
        self._none_told = False
        if ev.previous is None:
            return [Alert(Event.UPLINK_BACK, Severity.INFO, f"{ev.uplink} works again: "
                          f"{ev.reason}", now, ev.uplink, None, ev.reason)]
        if ev.uplink == "mobile":
            kind, sev, verb = Event.FAILOVER, Severity.WARNING, "failover"
        else:
            kind, sev, verb = Event.FAILBACK, Severity.INFO, "failback"
        return [Alert(kind, sev, f"{verb}: {ev.previous or 'none'} -> {ev.uplink}: {ev.reason}",
                      now, ev.uplink, ev.previous, ev.reason)]

    def modem(self, ev: ModemStateChanged, now: float) -> list[Alert]:
        """The modem state machine moved."""
        out: list[Alert] = []
        if ev.state == "connected":
            if self._lost_told and self.lost_since is not None:
                mins = (now - self.lost_since) / 60
                out.append(Alert(Event.MOBILE_BACK, Severity.INFO,
                                 f"mobile link back after {mins:.0f} min", now, "mobile"))
            self.lost_since, self._lost_told = None, False
        elif ev.previous == "connected" and self.lost_since is None:
            self.lost_since, self.lost_reason = now, ev.reason
        if ev.state == "sim_failed":
            out.append(Alert(Event.SIM, Severity.CRITICAL, f"SIM problem: {ev.reason}", now,
                             "mobile", reason=ev.reason))
        elif ev.state == "resetting":
            out.append(Alert(Event.MODEM_RECOVERY, Severity.WARNING,
                             f"modem recovery: {ev.reason}", now, "mobile", reason=ev.reason,
                             key=f"modem_recovery:{ev.reason.split(' (')[0]}"))
        elif ev.state == "rebooting":
            out.append(Alert(Event.MODEM_REBOOT, Severity.CRITICAL,
                             f"rebooting to recover the modem: {ev.reason}", now, "mobile",
                             reason=ev.reason))
        return out

    def lost_due(self) -> float | None:
        """When the mobile-lost alert becomes due (None: the link is not lost or was told)."""
        if self.lost_since is None or self._lost_told:
            return None
        return self.lost_since + self.link_lost_after

    def check_lost(self, now: float) -> list[Alert]:
        """The mobile link has been down for `link_lost_after`: tell once."""
        due = self.lost_due()
        if due is None or now < due or self.lost_since is None:
            return []
        self._lost_told = True
        return [Alert(Event.MOBILE_LOST, Severity.WARNING,
                      f"mobile link down since {_hhmm(self.lost_since)}: {self.lost_reason}",
                      now, "mobile", reason=self.lost_reason)]


def health(ev: HealthAlert) -> Alert:
    """The Pi health part's alert, as is (it is rate-limited there already)."""
    sev = Severity.CRITICAL if ev.severity is PiSeverity.CRITICAL else Severity.WARNING
    text = ev.message + (f" ({ev.held_back} more held back)" if ev.held_back else "")
    return Alert(Event.PI_HEALTH, sev, text, ev.at, key=f"pi:{ev.kind.value}",
                 fields={"kind": ev.kind.value})


def dyndns(ev: DyndnsBlocked, now: float) -> Alert:
    """The DNS provider blocked our updates."""
    return Alert(Event.DYNDNS_BLOCKED, Severity.WARNING,
                 f"dynamic DNS blocked for {ev.record}: {ev.reason}", now, reason=ev.reason,
                 fields={"record": ev.record})


def read_reboots(path: Path) -> list[float]:
    """The modem part's reboot log (wall times of the reboots it asked for)."""
    try:
        return [float(t) for t in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def boot_time(proc_stat: Path = Path("/proc/stat")) -> float | None:
    """When the kernel booted (`btime`), wall clock."""
    try:
        for line in proc_stat.read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rebooted(reboots: Sequence[float], booted: float | None, told: float | None,
             now: float) -> tuple[Alert | None, float | None]:
    """An alert if this boot followed a reboot we asked for (and it was not told yet); the
    reboot time to remember as told."""
    if booted is None:
        return None, told
    asked = [t for t in reboots if t <= booted <= t + REBOOT_SLACK]
    if not asked or asked[-1] == told:
        return None, told
    t = asked[-1]
    return (Alert(Event.REBOOTED, Severity.WARNING,
                  f"failberry is back after the reboot it asked for at {_hhmm(t)} "
                  f"(down {max(0.0, booted - t):.0f}s before the kernel started)", now,
                  fields={"asked_at": f"{t:.0f}"}), t)
