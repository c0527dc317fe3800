"""The shared status snapshot: every part of the supervisor writes its piece, every reader
(HTTP, `failberry status`, metrics, systemd STATUS=) reads the same object.

Writers call `Status.report(name, state, **detail)` from the loop's thread. The detail of three
parts has a fixed shape that readers rely on; the typed helpers below write and read it:

- `network` (`report_network`): `active_uplink` (str or None), `uplinks` (name -> `UplinkReport`
  fields: `up` is the probes' verdict after hysteresis, the fact `/health` decides on),
  `events` (the last failover decisions, `FailoverEvent` fields), `failovers_total`, `data`
  (`DataUsage` fields: mobile bytes used, cap, per device).
- `modem` (`ModemReport`): signal, operator, access technology, address, ladder rung, ...
- `dyndns` (`DyndnsReport`): record, published address, last success/error, next retry.
- `pihealth` (`failberry.pihealth.part`): `power`, `throttle`, `temperature`, `storage`,
  `alerts`, each present only where the board has it (QEMU and other boards lack most).

A part may also pass plain dicts with the same keys; the readers accept both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from failberry import __version__

NETWORK = "network"
MODEM = "modem"
DYNDNS = "dyndns"
PIHEALTH = "pihealth"  # the Pi's own health: failberry.pihealth.part.PiHealthPart.detail
UPLINKS = ("wired", "mobile")
MAX_EVENTS = 20


@dataclass
class PartReport:
    """A part's last word: when it reported (monotonic), how long it may stay silent, state."""

    deadline: float
    last: float = 0.0
    state: str = "starting"
    detail: dict[str, Any] = field(default_factory=dict)


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
        self.generation += 1

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
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)  # enums, addresses, paths: their text form


# ---------------------------------------------------------------------------------------------
# The network part's contract (failover issue): what /health decides on.


@dataclass(frozen=True)
class UplinkReport:
    """One uplink as the network part sees it after a probe round."""

    up: bool  # the probes pass (after hysteresis): this uplink carries traffic
    reason: str = ""  # why, in a few words ("3/3 targets answer", "carrier lost")
    interface: str = ""
    carrier: bool | None = None  # the link layer, when known
    address: str | None = None
    gateway: str | None = None
    latency_ms: float | None = None
    loss_pct: float | None = None
    rx_bytes: int | None = None
    tx_bytes: int | None = None


@dataclass(frozen=True)
class FailoverEvent:
    """A decision of the failover policy, kept for `failberry status`."""

    at: float  # wall-clock time (time.time())
    uplink: str | None  # the new active uplink; None: none works
    previous: str | None
    reason: str


@dataclass(frozen=True)
class DataUsage:
    """Mobile data used this period against the cap (0: no cap)."""

    used_bytes: int
    cap_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)  # LAN device -> bytes
    period_start: float | None = None  # wall clock
    capped: bool = False  # the cap is reached: only critical devices pass


@dataclass(frozen=True)
class NetworkView:
    """The network part's last report, parsed back for readers."""

    state: str
    current: bool  # reported within its deadline
    active_uplink: str | None
    uplinks: dict[str, UplinkReport]
    events: tuple[FailoverEvent, ...] = ()
    failovers_total: int = 0
    data: DataUsage | None = None


def report_network(status: Status, state: str, *, active_uplink: str | None,
                   uplinks: Mapping[str, UplinkReport], events: Sequence[FailoverEvent] = (),
                   failovers_total: int = 0, data: DataUsage | None = None) -> None:
    """The network part's report, once per probe round and on every change."""
    status.report(NETWORK, state, active_uplink=active_uplink,
                  uplinks={name: dataclasses.asdict(u) for name, u in uplinks.items()},
                  events=[dataclasses.asdict(e) for e in list(events)[-MAX_EVENTS:]],
                  failovers_total=failovers_total,
                  data=None if data is None else jsonable(data))


def _fields(cls: type[Any], raw: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, Mapping):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _uplink(raw: Any) -> UplinkReport:
    kw = _fields(UplinkReport, raw)
    kw["up"] = bool(kw.get("up", False))
    return UplinkReport(**kw)


def _event(raw: Any) -> FailoverEvent | None:
    if isinstance(raw, Mapping) and "uplink" not in raw and "active" in raw:
        raw = {**raw, "uplink": raw["active"]}  # failover.FailoverEvent's spelling
    kw = _fields(FailoverEvent, raw)
    if "at" not in kw:
        return None
    kw.setdefault("uplink", None)
    kw.setdefault("previous", None)
    kw.setdefault("reason", "")
    return FailoverEvent(**kw)


def network_view(status: Status, now: float | None = None) -> NetworkView | None:
    """The network part's report, or None when there is no network part."""
    part = status.parts.get(NETWORK)
    if part is None:
        return None
    d = part.detail
    raw_uplinks = d.get("uplinks") or {}
    uplinks = ({str(k): _uplink(v) for k, v in raw_uplinks.items()}
               if isinstance(raw_uplinks, Mapping) else {})
    events = tuple(e for e in (_event(r) for r in (d.get("events") or [])) if e is not None)
    data_kw = _fields(DataUsage, d.get("data"))
    if not data_kw and isinstance(d.get("data_used"), Mapping):
        # The flat spelling: data_used (device -> bytes), data_cap, over_cap.
        devices = {str(k): int(v) for k, v in d["data_used"].items()}
        data_kw = {"used_bytes": sum(devices.values()), "devices": devices,
                   "cap_bytes": int(d.get("data_cap") or 0),
                   "capped": bool(d.get("over_cap"))}
    active = d.get("active_uplink")
    return NetworkView(
        state=part.state, current=status.is_current(NETWORK, now),
        active_uplink=None if active is None else str(active), uplinks=uplinks,
        events=events, failovers_total=int(d.get("failovers_total") or 0),
        data=DataUsage(**data_kw) if "used_bytes" in data_kw else None,
    )


# ---------------------------------------------------------------------------------------------
# The modem's and dynamic DNS's shapes: readers show these keys when present.


@dataclass(frozen=True)
class ModemReport:
    """The modem part's facts: `Status.report("modem", state, **dataclasses.asdict(r))`."""

    signal_dbm: int | None = None
    operator: str | None = None
    technology: str | None = None  # GSM, UMTS, LTE, ...
    registration: str | None = None  # home, roaming, searching, denied, ...
    interface: str | None = None  # ppp0 when connected
    address: str | None = None
    private_address: bool | None = None  # NATed (HiLink, CGNAT): no inbound without forwarding
    data_path: str | None = None  # ppp, ncm, ecm, hilink
    device: str | None = None  # the AT port
    model: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    rung: str | None = None  # the recovery ladder's current rung
    recoveries: int = 0
    last_error: str | None = None


_MODEM_ALIASES = {"access_tech": "technology", "ladder_rung": "rung", "port": "device"}


def modem_view(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The modem's detail with `ModemReport`'s key names (aliases the driver uses mapped)."""
    out = dict(detail)
    for alias, key in _MODEM_ALIASES.items():
        if out.get(key) is None and out.get(alias) is not None:
            out[key] = out[alias]
    return out


def report_modem(status: Status, state: str, report: ModemReport) -> None:
    """The modem part's report."""
    status.report(MODEM, state, **dataclasses.asdict(report))


@dataclass(frozen=True)
class DyndnsReport:
    """The dynamic DNS part's facts (times are wall clock)."""

    name: str = ""
    provider: str = ""
    address: str | None = None  # what the record says now, as far as we know
    last_success: float | None = None
    last_confirmed: float | None = None  # the periodic check saw the record right
    last_error: str | None = None
    next_retry: float | None = None


def report_dyndns(status: Status, state: str, report: DyndnsReport) -> None:
    """The dynamic DNS part's report."""
    status.report(DYNDNS, state, **dataclasses.asdict(report))
