"""The shared status snapshot: every part of the supervisor writes its piece, every reader
(HTTP, `failberry status`, metrics, systemd STATUS=) reads the same object.

Writers call the loop's thread. Typed parts report one frozen dataclass through
`Status.publish(name, state, report)` (`report_network`, `report_dyndns`, `report_modem`,
`report_pihealth`, `report_alerts`); the object is kept (`PartReport.report`, read back by
`network_view`, `modem_view`, `pihealth_view`, `alerts_view`) and its JSON form is the part's
`/status` detail. The dataclasses live in `failberry.reports`:

- `network` (`NetworkReport`): active uplink, `uplinks` (`UplinkReport`: `up` is the probes'
  verdict after hysteresis, the fact `/health` decides on), failover `events`, `data` usage,
  forwards, configuration errors.
- `dyndns` (`DyndnsReport`): record, published address, last success/error, next retry.
- `modem` (`ModemReport`): the modem driver's facts (signal, operator, registration, ladder);
  `parts.py` reports "not managed" the same way when `modem.enabled = false`.
- `pihealth` (`PiHealthReport`): power, throttle, temperature, storage, the last alerts; a
  family the board lacks is left out of the JSON.
- `alerts` (`AlertsReport`): each channel's outbox, the recent alerts, the data forecast.

`Status.report(name, state, **detail)` is left for the supervisor's own `loop` entry."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from failberry import __version__
from failberry.reports import (
    AlertsReport,
    DataUsage,
    DyndnsReport,
    FailoverEvent,
    ModemReport,
    NetworkReport,
    PiHealthReport,
    UplinkReport,
)

NETWORK = "network"
MODEM = "modem"
DYNDNS = "dyndns"
PIHEALTH = "pihealth"  # the Pi's own health: failberry.pihealth.part.PiHealthPart
ALERTS = "alerts"
UPLINKS = ("wired", "mobile")
__all__ = ["ALERTS", "DYNDNS", "MAX_EVENTS", "MODEM", "NETWORK", "PIHEALTH", "UPLINKS",
           "AlertsReport", "DataUsage", "DyndnsReport", "FailoverEvent", "ModemReport",
           "NetworkReport", "NetworkView", "PartReport", "PiHealthReport", "Status",
           "UplinkReport", "alerts_view", "jsonable", "modem_view", "network_view",
           "pihealth_view", "report_alerts", "report_dyndns", "report_modem", "report_network",
           "report_pihealth"]
MAX_EVENTS = 20
R = TypeVar("R")


@dataclass
class PartReport:
    """A part's last word: when it reported (monotonic), how long it may stay silent, state."""

    deadline: float
    last: float = 0.0
    state: str = "starting"
    detail: dict[str, Any] = field(default_factory=dict)
    report: object = None  # the typed report (`publish`), None for untyped `report` calls


@dataclass
class Status:
    """What the supervisor knows right now."""

    state: str = "starting"  # starting | running | stopping
    started_wall: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    parts: dict[str, PartReport] = field(default_factory=dict)
    generation: int = 0  # bumped on every report: readers cache by it

    def register(self, name: str, deadline: float) -> None:
        """Declare a part that must report at least every `deadline` seconds."""
        self.parts[name] = PartReport(deadline=deadline, last=time.monotonic())
        self.generation += 1

    def unregister(self, name: str) -> None:
        """Forget a part (it was stopped for good, e.g. on a config reload)."""
        self.parts.pop(name, None)
        self.generation += 1

    def report(self, name: str, state: str, /, **detail: Any) -> None:
        """A part says it is alive, with its current state and facts (which may themselves
        be called `name` or `state`)."""
        part = self.parts.get(name)
        if part is None:
            part = self.parts[name] = PartReport(deadline=float("inf"))
        part.last = time.monotonic()
        part.state = state
        part.detail = dict(detail)
        part.report = None
        self.generation += 1

    def publish(self, name: str, state: str, report: object) -> None:
        """A part's typed report (a frozen dataclass): kept as is for readers, and as its
        JSON form for `/status`."""
        detail = jsonable(report)
        assert isinstance(detail, dict)
        self.report(name, state, **detail)
        self.parts[name].report = report

    def stale_parts(self, now: float | None = None) -> list[str]:
        """Parts that have not reported within their deadline."""
        now = time.monotonic() if now is None else now
        return sorted(n for n, p in self.parts.items() if now - p.last > p.deadline)

    def is_current(self, name: str, now: float | None = None) -> bool:
        """Whether part `name` exists and reported within its deadline."""
        part = self.parts.get(name)
        now = time.monotonic() if now is None else now
        return part is not None and now - part.last <= part.deadline

    def healthy(self) -> bool:
        """The minimal health rule: running, and every part reporting on time."""
        return self.state == "running" and not self.stale_parts()

    def snapshot(self) -> dict[str, Any]:
        """The JSON-ready view of every part (the HTTP layer adds the health verdict)."""
        now = time.monotonic()
        return {
            "status": "ok" if self.healthy() else "fail",
            "state": self.state,
            "version": __version__,
            "uptime_s": round(now - self.started_mono, 3),
            "started_at": self.started_wall,
            "parts": {
                name: {"state": p.state, "age_s": round(now - p.last, 3),
                       "stale": now - p.last > p.deadline, **jsonable(p.detail)}
                for name, p in sorted(self.parts.items())
            },
        }


def jsonable(value: Any) -> Any:
    """`value` made of dicts, lists, str, numbers, bools and None only (dataclasses as dicts)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(v) for f in dataclasses.fields(value)
                if (v := getattr(value, f.name)) is not None or not f.metadata.get("omit_none")}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)  # enums, addresses, paths: their text form


# ---------------------------------------------------------------------------------------------
# Writers and readers of the typed parts.


@dataclass(frozen=True)
class NetworkView:
    """The network part's last report, with its state and whether it is current."""

    state: str
    current: bool  # reported within its deadline
    report: NetworkReport

    @property
    def active_uplink(self) -> str | None:
        return self.report.active_uplink

    @property
    def uplinks(self) -> Mapping[str, UplinkReport]:
        return self.report.uplinks

    @property
    def events(self) -> tuple[FailoverEvent, ...]:
        return self.report.events

    @property
    def failovers_total(self) -> int:
        return self.report.failovers_total

    @property
    def data(self) -> DataUsage | None:
        return self.report.data


def report_network(status: Status, state: str, report: NetworkReport) -> None:
    """The network part's report, once per probe round and on every change."""
    if len(report.events) > MAX_EVENTS:
        report = dataclasses.replace(report, events=report.events[-MAX_EVENTS:])
    status.publish(NETWORK, state, report)


def network_view(status: Status, now: float | None = None) -> NetworkView | None:
    """The network part's report, or None when there is no network part. Before its first
    report (or after an untyped one) the view has no uplinks."""
    part = status.parts.get(NETWORK)
    if part is None:
        return None
    report = part.report if isinstance(part.report, NetworkReport) else _NO_REPORT
    return NetworkView(part.state, status.is_current(NETWORK, now), report)


_NO_REPORT = NetworkReport(active_uplink=None, uplinks={})


def report_dyndns(status: Status, state: str, report: DyndnsReport) -> None:
    """The dynamic DNS part's report."""
    status.publish(DYNDNS, state, report)


def report_modem(status: Status, state: str, report: ModemReport) -> None:
    """The modem part's report (or "not managed" when something else runs the modem)."""
    status.publish(MODEM, state, report)


def modem_view(status: Status) -> tuple[str, ModemReport] | None:
    """The modem's state and last report, or None when nothing reported about the modem.
    Before its first typed report the report is empty."""
    part = status.parts.get(MODEM)
    if part is None:
        return None
    return part.state, part.report if isinstance(part.report, ModemReport) else ModemReport()


def report_pihealth(status: Status, state: str, report: PiHealthReport) -> None:
    """The Pi health part's report, every poll and on every alert."""
    status.publish(PIHEALTH, state, report)


def report_alerts(status: Status, state: str, report: AlertsReport) -> None:
    """The alerts part's report."""
    status.publish(ALERTS, state, report)


def _view(status: Status, name: str, kind: type[R]) -> tuple[str, R] | None:
    part = status.parts.get(name)
    if part is None or not isinstance(part.report, kind):
        return None
    return part.state, part.report


def pihealth_view(status: Status) -> tuple[str, PiHealthReport] | None:
    """The Pi health part's state and last report, or None before its first report."""
    return _view(status, PIHEALTH, PiHealthReport)


def alerts_view(status: Status) -> tuple[str, AlertsReport] | None:
    """The alerts part's state and last report, or None before its first report."""
    return _view(status, ALERTS, AlertsReport)
