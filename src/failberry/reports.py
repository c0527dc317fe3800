"""What the typed parts report (`failberry.status.Status.publish`): frozen dataclasses whose JSON
form is the part's `/status` detail, and `parse`, which reads that JSON back strictly (every
key known, every required key present): the check that the document real parts serve has the
shape the readers and the tests' fake parts use."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


# A value a part lacks (the modem's operator while no stick is there, an uplink's address while
# it is down) is left out of the JSON, not null (`OMIT`: `failberry.status.jsonable` skips the
# field while it is None); `parse` reads an absent key as None. Null stays only where it is the
# value itself: no active uplink, an uplink not probed yet.
OMIT = {"omit_none": True}


def _opt() -> Any:
    return field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class UplinkReport:
    """One uplink as the network part sees it after a probe round."""

    up: bool | None  # the probes pass (after hysteresis); None: no probe round yet
    reason: str = ""  # why, in a few words ("3/3 targets answer", "carrier lost")
    interface: str = ""
    carrier: bool | None = _opt()  # the link layer, when known
    address: str | None = _opt()
    gateway: str | None = _opt()
    latency_ms: float | None = _opt()
    loss_pct: float | None = _opt()
    rx_bytes: int | None = _opt()
    tx_bytes: int | None = _opt()
    link: bool | None = _opt()  # the interface exists, is up and has what the plan needs


@dataclass(frozen=True)
class FailoverEvent:
    """One switch of the active uplink (the failover policy's decision), wall-clock time."""

    at: float
    uplink: str | None  # the new active uplink; None: none works
    previous: str | None
    reason: str


@dataclass(frozen=True)
class DataUsage:
    """Mobile data used this period against the cap (0: no cap)."""

    used_bytes: int
    cap_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)  # LAN device -> bytes
    period_start: float | None = _opt()  # wall clock
    capped: bool = False  # the cap is reached: only critical devices pass


@dataclass(frozen=True)
class NetworkReport:
    """The network part's report."""

    active_uplink: str | None
    uplinks: Mapping[str, UplinkReport]
    events: tuple[FailoverEvent, ...] = ()
    failovers_total: int = 0
    data: DataUsage | None = _opt()
    health_check_bytes: int = 0  # mobile bytes the probes themselves used
    errors: tuple[str, ...] = ()  # configuration errors (an interface that does not exist)
    apply_error: str | None = _opt()
    forwards: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # counters
    public_address: Mapping[str, str | None] | None = _opt()  # {"local": ..., "public": ...}
    forced: Mapping[str, Any] | None = _opt()  # a forced uplink, its end


@dataclass(frozen=True)
class DyndnsReport:
    """The dynamic DNS part's facts (times are wall clock)."""

    name: str = ""
    provider: str = ""
    address: str | None = _opt()  # what the record says now, as far as we know
    last_success: float | None = _opt()
    last_confirmed: float | None = _opt()  # the periodic check saw the record right
    last_error: str | None = _opt()
    next_retry: float | None = _opt()
    record: str = ""  # "name A" / "name AAAA"
    published: str | None = _opt()
    following: str = ""
    records: tuple[Mapping[str, Any], ...] = ()  # every record's own view
    waiting_for: str | None = _opt()


@dataclass(frozen=True)
class ModemReport:
    """The modem's facts, with exactly the keys `modem/driver.py` writes."""

    reason: str | None = _opt()
    port: str | None = _opt()  # the AT port
    data_path: str | None = _opt()  # ppp, ncm, ecm, hilink
    manufacturer: str | None = _opt()
    model: str | None = _opt()
    sim: str | None = _opt()
    signal_dbm: int | None = _opt()
    operator: str | None = _opt()
    access_tech: str | None = _opt()  # GSM, UMTS, LTE, ...
    registration: str | None = _opt()  # home, roaming, searching, denied, ...
    interface: str | None = _opt()  # ppp0 when connected
    address: str | None = _opt()
    private_address: bool | None = _opt()  # NATed (HiLink, CGNAT): no inbound without forwarding
    bytes_in: int | None = _opt()
    bytes_out: int | None = _opt()
    ladder_rung: str | None = _opt()  # the recovery ladder's pending rung
    ladder_counts: Mapping[str, int] = field(default_factory=dict)  # rung -> steps taken
    # Rungs refused for good on this stick -> why (port power with the Ethernet adapter on the
    # stick's ganged hub): the ladder skips them until the stick moves.
    refused: Mapping[str, str] = field(default_factory=dict)
    last_error: str | None = _opt()
    # The reboot budget ([recovery] reboots_per_day): reboots asked for in the last day; once
    # they reach the budget the ladder never reboots and the board stays up.
    reboots_last_day: int | None = _opt()
    reboots_per_day: int | None = _opt()
    reboot_budget_spent: bool | None = _opt()


@dataclass(frozen=True)
class PowerReport:
    """Under-voltage since boot (rpi_volt alarm, firmware, kernel log)."""

    undervoltage: bool
    events_total: int
    seconds_total: float
    events_last_hour: int
    seconds_last_hour: float
    last_seen_at: float | None = None  # wall clock


@dataclass(frozen=True)
class TemperatureReport:
    """The thermal zones, in degrees Celsius."""

    zones: Mapping[str, float]
    max_celsius: float
    warning_celsius: float
    hot: bool


@dataclass(frozen=True)
class StorageReport:
    """The root file system and the SD card errors in the kernel log."""

    root_readonly: bool | None = _opt()
    root_device: str | None = _opt()
    errors_total: int | None = _opt()  # absent when the kernel log cannot be read
    errors_last_hour: int | None = _opt()
    last_error: str | None = _opt()
    last_error_at: float | None = _opt()


@dataclass(frozen=True)
class PiAlert:
    """One alert the Pi health part published (wall clock)."""

    kind: str
    severity: str
    message: str
    at: float
    held_back: int = 0


@dataclass(frozen=True)
class PiHealthReport:
    """The Pi health part's report: what is wrong now, and each family the board has."""

    warnings: tuple[str, ...] = ()
    power: PowerReport | None = _opt()
    throttle: Mapping[str, bool] | None = _opt()  # vcgencmd get_throttled's flags
    temperature: TemperatureReport | None = _opt()
    kernel_log: str | None = _opt()  # why the kernel log is not read
    storage: StorageReport | None = _opt()
    alerts: tuple[PiAlert, ...] = ()


@dataclass(frozen=True)
class ChannelReport:
    """One alert channel's outbox."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    held: int = 0
    last_error: str | None = _opt()
    waiting_for: str | None = _opt()  # "time: ...": an HTTPS channel waiting for the clock


@dataclass(frozen=True)
class RecentAlert:
    """An alert offered to the channels (wall clock)."""

    at: float
    event: str
    severity: str
    message: str


@dataclass(frozen=True)
class DataForecast:
    """Where this period's mobile data is heading."""

    projected_bytes: int
    reach_at: float | None  # when the cap is reached, if before the reset
    period_end: float
    bytes_per_day: int
    health_bytes_per_day: int


@dataclass(frozen=True)
class AlertsReport:
    """The alerts part's report."""

    channels: Mapping[str, ChannelReport] = field(default_factory=dict)
    recent: tuple[RecentAlert, ...] = ()
    health_check_bytes: int = 0
    forecast: DataForecast | None = _opt()
    sms_commands: Mapping[str, int] | None = _opt()  # only with SMS commands


def parse(cls: type[T], raw: object, where: str = "") -> T:
    """`raw` (JSON) as `cls`; ValueError naming the first key that does not fit."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where or cls.__name__}: not an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown keys {unknown}")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}.{name}: missing")
            continue
        kwargs[name] = _value(hints[name], raw[name], f"{where}.{name}")
    return cls(**kwargs)


def _value(tp: Any, raw: object, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _value(arg, raw, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if dataclasses.is_dataclass(tp):
        return parse(tp, raw, where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(raw, list):
            raise ValueError(f"{where}: not a list")
        return tuple(_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(raw))
    if origin in (Mapping, dict):
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: not an object")
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in raw.items()}
    if tp is Any:
        return raw
    if tp is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if tp in (int, str, bool) and type(raw) is tp:
        return raw
    raise ValueError(f"{where}: {raw!r} is not {getattr(tp, '__name__', tp)}")
