"""The config model: one TOML file into frozen dataclasses, every error collected with its key
path, unknown keys refused, secrets masked everywhere they could be printed."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failberry import checks
from failberry.alerts import spec as alert_spec
from failberry.errors import ConfigError, ConfigIssue
from failberry.units import parse_duration, parse_size

DEFAULT_PATH = Path("/etc/failberry/failberry.toml")


class Secret:
    """A secret value. Its `str` and `repr` are masked; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; only for the code that must send or write it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


class Board(enum.StrEnum):
    """Raspberry Pi models the image builder targets."""

    RPI2 = "rpi2"
    RPI3 = "rpi3"
    RPI4 = "rpi4"
    ZERO2W = "zero2w"

    @property
    def arch(self) -> str:
        """Debian architecture of the image for this board."""
        return "armhf" if self is Board.RPI2 else "arm64"


class FailoverMode(enum.StrEnum):
    """`sidecar`: a backup gateway for the main router. `gateway`: the Pi is the router."""

    SIDECAR = "sidecar"
    GATEWAY = "gateway"


class DnsProvider(enum.StrEnum):
    """Dynamic DNS providers."""

    NONE = "none"
    RFC2136 = "rfc2136"
    DYNDNS2 = "dyndns2"
    ROUTE53_LAMBDA = "route53-lambda"
    ROUTE53 = "route53"


def _enum(cls: type[enum.StrEnum]) -> Callable[[object], Any]:
    def conv(value: object) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"must be one of: {', '.join(m.value for m in cls)}")
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not one of: {', '.join(m.value for m in cls)}"
            ) from None

    return conv


def _str(check: Callable[[str], str]) -> Callable[[object], str]:
    def conv(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_type_name(value)}")
        return check(value)

    return conv


def _optional_str(check: Callable[[str], str]) -> Callable[[object], str]:
    """Like `_str`, but the empty string means 'not set' and is kept."""
    inner = _str(check)

    def conv(value: object) -> str:
        if value == "":
            return ""
        return inner(value)

    return conv


def _str_list(check: Callable[[str], str]) -> Callable[[object], tuple[str, ...]]:
    def conv(value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of strings, not {_type_name(value)}")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"item {i + 1} must be a string, not {_type_name(item)}")
            try:
                out.append(check(item))
            except ValueError as e:
                raise ValueError(f"item {i + 1}: {e}") from None
        return tuple(out)

    return conv


def _int_range(lo: int, hi: int) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {_type_name(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo} to {hi}, not {value}")
        return value

    return conv


def _port_list(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of port numbers, not {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"item {i + 1} must be a port number, not {_type_name(item)}")
        try:
            out.append(checks.port(item))
        except ValueError as e:
            raise ValueError(f"item {i + 1}: {e}") from None
    return tuple(out)


def _port_range(value: object) -> str:
    """A port, 1194, or an inclusive range, "60000-60010"; kept as text ("1194",
    "60000-60010")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(checks.port(value))
    if not isinstance(value, str):
        raise ValueError(f"must be a port number or a range like \"60000-60010\", "
                         f"not {_type_name(value)}")
    lo, sep, hi = value.partition("-")
    try:
        first, last = int(lo), int(hi if sep else lo)
    except ValueError:
        raise ValueError(f"{value!r} is not a port or a range like \"60000-60010\"") from None
    checks.port(first)
    checks.port(last)
    if last < first:
        raise ValueError(f"{value!r}: the range ends before it starts")
    return f"{first}-{last}" if last != first else str(first)


def port_bounds(text: str) -> tuple[int, int]:
    """`"1194"` to (1194, 1194), `"60000-60010"` to (60000, 60010)."""
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def _duration(lo: float = 0.0, hi: float = 365 * 86400.0) -> Callable[[object], float]:
    def conv(value: object) -> float:
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError(f"must be from {lo:g}s to {hi:g}s")
        return seconds

    return conv


def _percent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number from 0 to 100, not {_type_name(value)}")
    if not 0 <= value <= 100:
        raise ValueError(f"must be from 0 to 100, not {value}")
    return float(value)


def _size(value: object) -> int:
    return parse_size(value)


def _type_name(value: object) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def opt(default: Any, conv: Callable[[object], Any] | None = None, *, required: bool = False,
        doc: str = "") -> Any:
    """A config field: its default, the converter that validates a raw TOML value, and a doc."""
    meta = {"conv": conv, "required": required, "doc": doc}
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A nested table."""
    return field(default_factory=cls, metadata={"section": True})


def _bad(message: str) -> str:
    raise ValueError(message)


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of: {', '.join(allowed)}")
    return value


def _no_quotes(value: str) -> str:
    if any(c in value for c in "'\"\\\n\r") or not value.isprintable():
        raise ValueError("must not contain quotes, backslashes or control characters")
    return value


def _base64(value: str) -> str:
    import base64
    import binascii

    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (a TSIG secret from `tsig-keygen`)") from None
    return value


def _abs_path(value: str) -> str:
    return value if value.startswith("/") else _bad(f"{value!r} is not an absolute path")


def _command(value: object) -> tuple[str, ...]:
    argv = _str_list(lambda s: s if s else _bad("must not be empty"))(value)
    if not argv:
        raise ValueError("must name a program")
    return argv


def _dev_path(value: str) -> str:
    return value if value.startswith("/dev/") else _bad("must be a path under /dev")


def _usb_id(value: str) -> str:
    vid, sep, pid = value.partition(":")
    ok = sep and len(vid) == 4 and len(pid) == 4
    try:
        int(vid, 16)
        int(pid, 16)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{value!r} is not a USB id like \"19d2:0031\"")
    return value.lower()


DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_WIRED_TARGETS = ("icmp:1.1.1.1", "icmp:8.8.8.8", "icmp:9.9.9.9")
DEFAULT_MOBILE_TARGETS = ("icmp:1.1.1.1", "icmp:8.8.8.8", "icmp:9.9.9.9")


@dataclass(frozen=True)
class ImageConfig:
    """`[image]`: what the SD-card image is built for."""

    board: Board = opt(Board.RPI3, _enum(Board), doc="rpi2 (armhf), rpi3, rpi4, zero2w (arm64)")
    suite: str = opt("bookworm", _str(lambda s: _one_of(s, ("bookworm",))))
    mirror: str = opt(DEFAULT_MIRROR, _str(checks.http_url))
    hostname: str = opt("failberry", _str(checks.hostname_label))
    size: int = opt(parse_size("1GiB"), _size)
    extra_packages: tuple[str, ...] = opt((), _str_list(checks.deb_package))


@dataclass(frozen=True)
class AdminConfig:
    """`[admin]`: the one login on the image, SSH keys only unless a password hash is given."""

    user: str = opt("admin", _str(checks.username))
    ssh_authorized_keys: tuple[str, ...] = opt((), _str_list(checks.ssh_public_key))
    password_hash: Secret | None = opt(None, _str(checks.crypt_hash))
    timezone: str = opt("UTC", _str(checks.timezone))


@dataclass(frozen=True)
class LanConfig:
    """`[lan]`: the Pi's own network, where clients and the main router are."""

    interface: str = opt("eth0", _str(checks.interface_name))
    address: str = opt("192.168.1.2/24", _str(checks.interface_address))
    gateway: str = opt("", _optional_str(checks.ip_address),
                       doc="the main router (sidecar mode); empty: none")
    dns: tuple[str, ...] = opt(("1.1.1.1", "9.9.9.9"), _str_list(checks.ip_address))


@dataclass(frozen=True)
class WiredUplink:
    """`[uplink.wired]`: the primary uplink in gateway mode (unused in sidecar mode)."""

    interface: str = opt("", _optional_str(checks.interface_name))
    address: str = opt("dhcp", _str(lambda s: s if s == "dhcp" else checks.interface_address(s)))
    gateway: str = opt("", _optional_str(checks.ip_address))
    probe_targets: tuple[str, ...] = opt(DEFAULT_WIRED_TARGETS, _str_list(checks.probe_target))
    probe_interval: float = opt(0.5, _duration(0.05, 3600))
    down: int = opt(3, _int_range(1, 1000))
    up: int = opt(5, _int_range(1, 1000))
    priority: int = opt(10, _int_range(1, 1000), doc="lower is preferred")


@dataclass(frozen=True)
class MobileUplink:
    """`[uplink.mobile]`: the cellular link, usually `ppp0`; probed more slowly (metered)."""

    interface: str = opt("ppp0", _str(checks.interface_name))
    probe_targets: tuple[str, ...] = opt(DEFAULT_MOBILE_TARGETS, _str_list(checks.probe_target))
    probe_interval: float = opt(2.0, _duration(0.05, 3600))
    down: int = opt(3, _int_range(1, 1000))
    up: int = opt(3, _int_range(1, 1000))
    priority: int = opt(20, _int_range(1, 1000))
    mss_clamp: bool = opt(True)
    public_address_url: str = opt("", _optional_str(checks.http_url),
                                  doc="an outside \"what is my address\" URL, asked over "
                                      "this link to detect NAT; empty: not asked")


@dataclass(frozen=True)
class UplinkConfig:
    """`[uplink]`: holds `[uplink.wired]` and `[uplink.mobile]`."""

    wired: WiredUplink = section(WiredUplink)
    mobile: MobileUplink = section(MobileUplink)


@dataclass(frozen=True)
class ModemConfig:
    """`[modem]`: the USB stick and how to dial it."""

    device: str = opt("auto", _str(lambda s: s if s == "auto" or s.startswith("/dev/")
                                    else _bad("must be \"auto\" or a path under /dev")))
    apn: str = opt("", _str(checks.apn), required=True)
    pin: Secret | None = opt(None, _str(checks.pin))
    dial: str = opt("*99#", _str(checks.dial_string))
    init: tuple[str, ...] = opt((), _str_list(checks.at_command))
    username: str = opt("", _str(_no_quotes))
    password: Secret | None = opt(None, _str(_no_quotes))
    usb_ids: tuple[str, ...] = opt((), _str_list(_usb_id),
                                   doc="extra vendor:product ids to treat as modems")
    enabled: bool = opt(True, doc="false: no modem part; the mobile interface is brought up "
                                  "by something else")
    at_port: str = opt("", _optional_str(_dev_path),
                       doc="AT port kept for monitoring while the data port carries PPP; "
                           "empty: found automatically")
    pppd: str = opt("/usr/sbin/pppd", _str(_abs_path), doc="the pppd program")
    data: str = opt("auto", _str(lambda s: s if s in ("auto", "ppp", "ncm", "ecm", "hilink")
                                 else _bad('must be "auto", "ppp", "ncm", "ecm" or "hilink"')),
                    doc="data path: auto (from what the stick presents), ppp, ncm, ecm, hilink")


@dataclass(frozen=True)
class FailoverConfig:
    """`[failover]`: topology and when to switch uplinks."""

    mode: FailoverMode = opt(FailoverMode.SIDECAR, _enum(FailoverMode))
    latency_threshold: float = opt(1.0, _duration(0.001, 60))
    loss_threshold: float = opt(50.0, _percent)
    quorum: int = opt(0, _int_range(0, 100), doc="targets that must fail; 0: a majority")
    hold_down: float = opt(30.0, _duration(0, 86400), doc="wait before failing back")
    allowed_devices: tuple[str, ...] = opt((), _str_list(checks.lan_device),
                                           doc="who may use the mobile link; empty: everyone")
    critical_devices: tuple[str, ...] = opt((), _str_list(checks.lan_device),
                                            doc="who may still use it past the data cap")
    data_cap: int = opt(0, _size, doc="monthly mobile data cap; 0: none")
    cap_reset_day: int = opt(1, _int_range(1, 28))


@dataclass(frozen=True)
class FirewallConfig:
    """`[firewall]`: ports opened on the uplinks; everything else inbound there is dropped."""

    allow_tcp: tuple[int, ...] = opt((), _port_list)
    allow_udp: tuple[int, ...] = opt((), _port_list)


@dataclass(frozen=True)
class ForwardConfig:
    """One `[[forward]]`: a port on the uplinks sent on to a LAN address."""

    protocol: str = opt("", _str(lambda s: _one_of(s, ("tcp", "udp"))), required=True)
    port: str = opt("", _port_range, required=True,
                    doc="on the uplinks: a port or a range \"60000-60010\"")
    to: str = opt("", _str(checks.ip_address), required=True,
                  doc="a LAN address (inside lan.address's prefix)")
    to_port: str = opt("", lambda v: "" if v == "" else _port_range(v),
                       doc="empty: the same port(s)")
    uplinks: tuple[str, ...] = opt((), _str_list(lambda s: _one_of(s, ("wired", "mobile"))),
                                   doc="empty: every uplink failberry owns in this mode")

    @property
    def name(self) -> str:
        """How logs and metrics name it: `udp/1194`."""
        return f"{self.protocol}/{self.port}"


@dataclass(frozen=True)
class HealthConfig:
    """`[health]`: the HTTP health endpoint DNS failover services poll."""

    listen: str = opt("0.0.0.0", _str(checks.ip_address))
    port: int = opt(9000, _int_range(1, 65535))
    lan_only_status: bool = opt(True, doc="/status and /metrics only from the LAN")


@dataclass(frozen=True)
class Rfc2136Config:
    """`[dyndns.rfc2136]`: DNS UPDATE signed with TSIG."""

    server: str = opt("", _optional_str(checks.host))
    port: int = opt(53, _int_range(1, 65535))
    zone: str = opt("", _optional_str(checks.fqdn))
    tsig_key_name: str = opt("", _optional_str(checks.fqdn))
    tsig_algorithm: str = opt("hmac-sha256", _str(lambda s: _one_of(
        s, ("hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5"))))
    tsig_secret: Secret | None = opt(None, _str(_base64))


@dataclass(frozen=True)
class Dyndns2Config:
    """`[dyndns.dyndns2]`: the de-facto HTTP update protocol."""

    url: str = opt("", _optional_str(checks.http_url))
    username: str = opt("")
    password: Secret | None = opt(None, _str(lambda s: s))


@dataclass(frozen=True)
class Route53LambdaConfig:
    """`[dyndns.route53-lambda]`: awslabs' route53 dynamic DNS with Lambda."""

    url: str = opt("", _optional_str(checks.http_url))
    shared_secret: Secret | None = opt(None, _str(lambda s: s))


@dataclass(frozen=True)
class Route53Config:
    """`[dyndns.route53]`: the Route53 API directly."""

    zone_id: str = opt("")
    access_key_id: str = opt("")
    secret_access_key: Secret | None = opt(None, _str(lambda s: s))
    region: str = opt("us-east-1")


@dataclass(frozen=True)
class DyndnsConfig:
    """`[dyndns]`: publish the current address under a name."""

    provider: DnsProvider = opt(DnsProvider.NONE, _enum(DnsProvider))
    name: str = opt("", _optional_str(checks.fqdn))
    ttl: int = opt(60, _int_range(1, 86400))
    check_interval: float = opt(600.0, _duration(1, 86400))
    ipv6: bool = opt(False, doc="also publish an AAAA record from the uplink's IPv6 address")
    interface: str = opt("", _optional_str(checks.interface_name),
                         doc="follow this interface's address; empty: the active uplink's")
    retry_initial: float = opt(2.0, _duration(0.01, 3600))
    retry_max: float = opt(300.0, _duration(0.01, 86400))
    rfc2136: Rfc2136Config = section(Rfc2136Config)
    dyndns2: Dyndns2Config = section(Dyndns2Config)
    route53_lambda: Route53LambdaConfig = section(Route53LambdaConfig)
    route53: Route53Config = section(Route53Config)


@dataclass(frozen=True)
class RecoveryConfig:
    """`[recovery]`: the self-repair ladder: redial, modem reset, USB rebind, power, reboot."""

    registration_timeout: float = opt(180.0, _duration(5, 3600))
    redial_limit: int = opt(3, _int_range(0, 100))
    modem_reset_limit: int = opt(2, _int_range(0, 100))
    usb_rebind_limit: int = opt(2, _int_range(0, 100))
    port_power_limit: int = opt(2, _int_range(0, 100))
    reboots_per_day: int = opt(1, _int_range(0, 24), doc="0: never reboot")
    backoff_initial: float = opt(5.0, _duration(0.01, 3600))
    backoff_max: float = opt(300.0, _duration(0.01, 86400))
    stable_after: float = opt(600.0, _duration(1, 86400), doc="reset the ladder after this")
    reboot_command: tuple[str, ...] = opt(("systemctl", "reboot"), _command,
                                          doc="the command the last rung runs")


@dataclass(frozen=True)
class PathsConfig:
    """`[paths]`: where the supervisor keeps runtime files and state that survives reboots."""

    run_dir: str = opt("/run/failberry", _str(_abs_path))
    state_dir: str = opt("/var/lib/failberry", _str(_abs_path))


@dataclass(frozen=True)
class HostguardConfig:
    """`[hostguard]`: kernel hung-task settings and the hung-storage watcher."""

    hung_task_panic: int = opt(1, _int_range(0, 1_000_000))
    hung_task_timeout: int = opt(120, _int_range(0, 86400), doc="seconds, kernel's detector")
    panic: int = opt(5, _int_range(-1, 3600), doc="reboot this many seconds after a panic")
    mounts: tuple[str, ...] = opt(("/",), _str_list(lambda s: s if s.startswith("/")
                                                    else _bad(f"{s!r} is not an absolute path")))
    probe_interval: float = opt(2.0, _duration(0.1, 600))
    threshold: float = opt(20.0, _duration(1, 3600), doc="a probe this late means hung")
    grace: float = opt(2.0, _duration(0, 60), doc="time for the alert to leave before reboot")
    syslog_target: str = opt("", _optional_str(checks.host_port))
    netconsole: str = opt("", _optional_str(checks.host_port))


def _celsius(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be degrees Celsius (a number), not {_type_name(value)}")
    if not 20 <= value <= 150:
        raise ValueError(f"must be from 20 to 150 degrees Celsius, not {value}")
    return float(value)


@dataclass(frozen=True)
class PihealthConfig:
    """`[pihealth]`: the Pi's own health: under-voltage, temperature, SD card errors."""

    interval: float = opt(5.0, _duration(0.1, 600), doc="read sysfs and the kernel log")
    temperature_warning: float = opt(80.0, _celsius, doc="degrees Celsius; the firmware "
                                     "throttles at 80-85")
    alert_interval: float = opt(900.0, _duration(0, 86400),
                                doc="at most one alert of a kind this often")


@dataclass(frozen=True)
class AlertsConfig:
    """`[alerts]`: telling the admin by SMS through the stick, webhooks and hook scripts."""

    sms_to: tuple[str, ...] = opt((), _str_list(alert_spec.phone),
                                  doc="numbers that get SMS alerts")
    sms_commands_from: tuple[str, ...] = opt((), _str_list(alert_spec.phone),
                                             doc="numbers whose SMS commands are obeyed")
    sms_port: str = opt("", _optional_str(_dev_path),
                        doc="an AT port for SMS only; empty: the modem part's AT port")
    sms_force_for: float = opt(1800.0, _duration(60, 86400),
                               doc="how long an SMS failover/failback holds")
    webhooks: tuple[str, ...] = opt((), _str_list(alert_spec.webhook),
                                    doc="\"ntfy URL\", \"slack URL\" or \"json URL\"")
    webhook_timeout: float = opt(10.0, _duration(0.1, 300))
    hooks_dir: str = opt("/etc/failberry/hooks.d", _str(_abs_path))
    hook_timeout: float = opt(30.0, _duration(0.1, 3600))
    hold_down: float = opt(300.0, _duration(0, 86400),
                           doc="one message per kind and channel this often, with a count")
    max_per_hour: int = opt(20, _int_range(1, 3600), doc="per channel")
    quiet_hours: str = opt("", _str(alert_spec.quiet_hours), doc="\"22:00-07:00\": hold "
                           "non-critical alerts (local time); empty: none")
    retry_initial: float = opt(10.0, _duration(0.01, 3600))
    retry_max: float = opt(600.0, _duration(0.01, 86400))
    retry_for: float = opt(86400.0, _duration(1, 30 * 86400), doc="give a message up after")
    cap_warnings: tuple[float, ...] = opt((80.0, 100.0), alert_spec.percent_list,
                                          doc="percent of failover.data_cap")
    link_lost_after: float = opt(300.0, _duration(0, 86400),
                                 doc="tell when the mobile link stays down this long")


@dataclass(frozen=True)
class Config:
    """The whole failberry config."""

    image: ImageConfig = section(ImageConfig)
    admin: AdminConfig = section(AdminConfig)
    lan: LanConfig = section(LanConfig)
    uplink: UplinkConfig = section(UplinkConfig)
    modem: ModemConfig = section(ModemConfig)
    failover: FailoverConfig = section(FailoverConfig)
    firewall: FirewallConfig = section(FirewallConfig)
    health: HealthConfig = section(HealthConfig)
    dyndns: DyndnsConfig = section(DyndnsConfig)
    recovery: RecoveryConfig = section(RecoveryConfig)
    hostguard: HostguardConfig = section(HostguardConfig)
    paths: PathsConfig = section(PathsConfig)
    pihealth: PihealthConfig = section(PihealthConfig)
    alerts: AlertsConfig = section(AlertsConfig)
    forward: tuple[ForwardConfig, ...] = field(default=(), metadata={"table_list": True})


# ---------------------------------------------------------------------------------------------
# Loading


def _toml_key(name: str) -> str:
    """Python field names use `_`; the one TOML table with a hyphen is `route53-lambda`."""
    return "route53-lambda" if name == "route53_lambda" else name


def _is_secret(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and Secret in typing.get_args(
        tp
    )


class _Loader:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []

    def issue(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, message))

    def build(self, cls: type[Any], data: dict[str, Any], prefix: str) -> Any:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        names = {_toml_key(f.name): f for f in fields}
        secret_files = {f"{_toml_key(f.name)}_file": f for f in fields if _is_secret(hints[f.name])}
        for key in data:
            if key not in names and key not in secret_files:
                self.issue(_join(prefix, key), f"unknown key (known: {', '.join(sorted(names))})")
        kwargs: dict[str, Any] = {}
        for key, f in names.items():
            path = _join(prefix, key)
            tp = hints[f.name]
            if f.metadata.get("section"):
                raw = data.get(key, {})
                if not isinstance(raw, dict):
                    self.issue(path, f"must be a table ([{path}]), not {_type_name(raw)}")
                    continue
                kwargs[f.name] = self.build(tp, raw, path)
                continue
            if f.metadata.get("table_list"):
                if key in data:
                    kwargs[f.name] = self.table_list(typing.get_args(tp)[0], data[key], path)
                continue
            if _is_secret(tp):
                secret = self.secret(data, key, path, f.metadata.get("conv"))
                if secret is not None:
                    kwargs[f.name] = secret
                continue
            if key not in data:
                if f.metadata.get("required"):
                    self.issue(path, "is required")
                continue
            value = self.convert(data[key], tp, f.metadata.get("conv"), path)
            if value is not _INVALID:
                kwargs[f.name] = value
        return cls(**kwargs)

    def table_list(self, cls: type[Any], raw: object, path: str) -> tuple[Any, ...]:
        """A list of tables (`[[forward]]`), each built like a section; the key paths count
        from 1: `forward[2].port` is the second entry's `port`."""
        if not isinstance(raw, list):
            self.issue(path, f"must be a list of tables ([[{path}]]), not {_type_name(raw)}")
            return ()
        out = []
        for i, item in enumerate(raw):
            where = f"{path}[{i + 1}]"
            if not isinstance(item, dict):
                self.issue(where, f"must be a table ([[{path}]]), not {_type_name(item)}")
                continue
            out.append(self.build(cls, item, where))
        return tuple(out)

    def secret(self, data: dict[str, Any], key: str, path: str,
               conv: Callable[[object], Any] | None) -> Secret | None:
        file_key = f"{key}_file"
        if key in data and file_key in data:
            self.issue(path, f"give either {key} or {file_key}, not both")
            return None
        if file_key in data:
            raw_path = data[file_key]
            if not isinstance(raw_path, str) or not raw_path:
                self.issue(f"{path}_file", "must be a path to a file")
                return None
            file = Path(os.path.expanduser(raw_path))
            if not file.is_absolute():
                file = self.base_dir / file
            try:
                text = file.read_text(encoding="utf-8").strip()
            except OSError as e:
                self.issue(f"{path}_file", f"cannot read {file}: {e.strerror or e}")
                return None
            except UnicodeDecodeError:
                self.issue(f"{path}_file", f"{file} is not UTF-8 text")
                return None
            value: object = text
            where = f"{path}_file"
        elif key in data:
            value = data[key]
            where = path
        else:
            return None
        # Messages about secrets never quote the value.
        if not isinstance(value, str):
            self.issue(where, f"must be a string, not {_type_name(value)}")
            return None
        if conv is not None:
            try:
                conv(value)
            except ValueError as e:
                self.issue(where, _scrub(str(e), value))
                return None
        return Secret(value)

    def convert(self, raw: object, tp: Any, conv: Callable[[object], Any] | None,
                path: str) -> Any:
        try:
            if conv is not None:
                return conv(raw)
            if tp is bool:
                if not isinstance(raw, bool):
                    raise ValueError(f"must be true or false, not {_type_name(raw)}")
                return raw
            if tp is int:
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise ValueError(f"must be a whole number, not {_type_name(raw)}")
                return raw
            if tp is str:
                if not isinstance(raw, str):
                    raise ValueError(f"must be a string, not {_type_name(raw)}")
                return raw
            raise TypeError(f"no converter for {tp}")  # a bug in the schema, not user input
        except ValueError as e:
            self.issue(path, str(e))
            return _INVALID


_INVALID = object()


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _scrub(message: str, secret: str) -> str:
    return message.replace(secret, "********") if secret else message


def _cross_checks(cfg: Config, issue: Callable[[str, str], None]) -> None:
    """Rules that span keys; each names the key a person should change."""
    lan = ipaddress.ip_interface(cfg.lan.address)
    if cfg.lan.gateway:
        gw = ipaddress.ip_address(cfg.lan.gateway)
        if gw not in lan.network:
            issue("lan.gateway", f"{gw} is not inside the LAN prefix {lan.network}")
        elif gw == lan.ip:
            issue("lan.gateway", "must not be the Pi's own LAN address")
    wired = cfg.uplink.wired
    if cfg.failover.mode is FailoverMode.GATEWAY and not wired.interface:
        issue("uplink.wired.interface", "is required when failover.mode is \"gateway\"")
    if wired.address != "dhcp" and wired.gateway:
        wnet = ipaddress.ip_interface(wired.address).network
        if ipaddress.ip_address(wired.gateway) not in wnet:
            issue("uplink.wired.gateway", f"{wired.gateway} is not inside {wnet}")
    seen: dict[str, str] = {}
    for path, name in (("lan.interface", cfg.lan.interface),
                       ("uplink.wired.interface", wired.interface),
                       ("uplink.mobile.interface", cfg.uplink.mobile.interface)):
        if not name:
            continue
        if name in seen:
            issue(path, f"{name!r} is already used by {seen[name]}")
        seen.setdefault(name, path)
    for name, up in (("wired", wired), ("mobile", cfg.uplink.mobile)):
        if not up.probe_targets and (name == "mobile" or wired.interface):
            issue(f"uplink.{name}.probe_targets", "needs at least one target")
        if cfg.failover.quorum > len(up.probe_targets) and up.probe_targets:
            issue("failover.quorum", f"is larger than the {len(up.probe_targets)} targets of "
                  f"uplink.{name}")
    if cfg.recovery.backoff_max < cfg.recovery.backoff_initial:
        issue("recovery.backoff_max", "must not be shorter than recovery.backoff_initial")
    if cfg.alerts.retry_max < cfg.alerts.retry_initial:
        issue("alerts.retry_max", "must not be shorter than alerts.retry_initial")
    if cfg.image.size < parse_size("768MiB"):
        issue("image.size", "must be at least 768MiB (kernel, firmware and Python need it)")
    if cfg.modem.password is not None and not cfg.modem.username:
        issue("modem.username", "is required when modem.password is set")
    _dyndns_checks(cfg.dyndns, issue)
    _forward_checks(cfg, issue)
    _hostguard_checks(cfg.hostguard, issue)


def _forward_checks(cfg: Config, issue: Callable[[str, str], None]) -> None:
    lan = ipaddress.ip_interface(cfg.lan.address)
    sidecar = cfg.failover.mode is FailoverMode.SIDECAR
    taken: list[tuple[str, str, int, int, str]] = []  # protocol, uplink, first, last, key
    for n, fw in enumerate(cfg.forward, 1):
        key = f"forward[{n}]"
        to = ipaddress.ip_address(fw.to)
        if to not in lan.network or to in (lan.network.network_address,
                                            lan.network.broadcast_address):
            issue(f"{key}.to", f"{fw.to} is not a host inside the LAN prefix {lan.network}")
        elif to == lan.ip:
            issue(f"{key}.to", "must not be the Pi's own LAN address (open it with "
                  "firewall.allow_tcp/allow_udp instead)")
        first, last = port_bounds(fw.port)
        if fw.to_port:
            t_first, t_last = port_bounds(fw.to_port)
            if t_last - t_first != last - first:
                issue(f"{key}.to_port", f"{fw.to_port} does not have as many ports as "
                      f"{key}.port ({fw.port})")
            elif first != t_first and last - first >= 256:
                issue(f"{key}.to_port", "a range moved to other ports may hold at most 256")
        if sidecar and "wired" in fw.uplinks:
            issue(f"{key}.uplinks", "\"wired\" is the main router's in sidecar mode: forward "
                  "the port there")
        if fw.protocol == "tcp" and first <= cfg.health.port <= last:
            issue(f"{key}.port", f"{fw.port} includes the health endpoint's port "
                  f"{cfg.health.port} (health.port)")
        ups = fw.uplinks or (("mobile",) if sidecar else ("wired", "mobile"))
        for up in ups:
            for proto, other_up, lo, hi, other in taken:
                if proto == fw.protocol and other_up == up and lo <= last and first <= hi:
                    issue(f"{key}.port", f"{fw.protocol} {fw.port} on {up} overlaps {other}")
                    break
            taken.append((fw.protocol, up, first, last, key))


def _hostguard_checks(hg: HostguardConfig, issue: Callable[[str, str], None]) -> None:
    if hg.threshold <= hg.probe_interval:
        issue("hostguard.threshold", "must be longer than hostguard.probe_interval")


def _dyndns_checks(d: DyndnsConfig, issue: Callable[[str, str], None]) -> None:
    if d.provider is DnsProvider.NONE:
        return
    if not d.name:
        issue("dyndns.name", f"is required when dyndns.provider is {d.provider.value!r}")
    required: dict[DnsProvider, tuple[str, object, tuple[str, ...]]] = {
        DnsProvider.RFC2136: ("dyndns.rfc2136", d.rfc2136,
                              ("server", "zone", "tsig_key_name", "tsig_secret")),
        DnsProvider.DYNDNS2: ("dyndns.dyndns2", d.dyndns2, ("url", "username", "password")),
        DnsProvider.ROUTE53_LAMBDA: ("dyndns.route53-lambda", d.route53_lambda,
                                     ("url", "shared_secret")),
        DnsProvider.ROUTE53: ("dyndns.route53", d.route53,
                              ("zone_id", "access_key_id", "secret_access_key")),
    }
    prefix, sub, keys = required[d.provider]
    for key in keys:
        if getattr(sub, key) in ("", None):
            issue(f"{prefix}.{key}", f"is required when dyndns.provider is {d.provider.value!r}")
    if d.retry_max < d.retry_initial:
        issue("dyndns.retry_max", "must not be shorter than dyndns.retry_initial")
    zone = d.rfc2136.zone
    inside = d.name == zone or d.name.endswith("." + zone)
    if d.provider is DnsProvider.RFC2136 and d.name and zone and not inside:
        issue("dyndns.name", f"{d.name!r} is not inside dyndns.rfc2136.zone "
                  f"{d.rfc2136.zone!r}")


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message already carries "(at line L, column C)".
        raise ConfigError(source, [ConfigIssue("", f"TOML syntax error: {e}")]) from None


def _read_text(path: Path) -> str:
    """A config file's text; a missing, unreadable or non-UTF-8 file is a ConfigError."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigIssue("", "no such file")]) from None
    except OSError as e:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read: {e.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [ConfigIssue("", "is not UTF-8 text")]) from None


def parse(text: str, source: str = "failberry.toml", base_dir: Path | None = None) -> Config:
    """Parse config text; raise ConfigError listing every problem found."""
    data = _toml(text, source)
    loader = _Loader(base_dir or Path.cwd())
    cfg = loader.build(Config, data, "")
    if not loader.issues:
        _cross_checks(cfg, loader.issue)
    if loader.issues:
        raise ConfigError(source, loader.issues)
    assert isinstance(cfg, Config)
    return cfg


def load(path: Path | str) -> Config:
    """Read and parse a config file; a missing or unreadable file is a ConfigError too."""
    path = Path(path)
    return parse(_read_text(path), str(path), path.parent.resolve())


def parse_hostguard(text: str, source: str = "hostguard.toml") -> HostguardConfig:
    """Parse only `[hostguard]` from a server's file (which need not have `[modem]`).

    Other top-level tables of the full config are accepted and ignored, so the router's own
    file works too; a table the full config does not know is still an error (a typo such as
    `[hostgaurd]` must not silently give the defaults)."""
    data = _toml(text, source)
    loader = _Loader(Path.cwd())
    known = {_toml_key(f.name) for f in dataclasses.fields(Config)}
    for key in data:
        if key not in known:
            loader.issue(key, f"unknown key (known: {', '.join(sorted(known))})")
    raw = data.get("hostguard", {})
    if not isinstance(raw, dict):
        loader.issue("hostguard", f"must be a table ([hostguard]), not {_type_name(raw)}")
        raw = {}
    hg = loader.build(HostguardConfig, raw, "hostguard")
    if not loader.issues:
        _hostguard_checks(hg, loader.issue)
    if loader.issues:
        raise ConfigError(source, loader.issues)
    assert isinstance(hg, HostguardConfig)
    return hg


def load_hostguard(path: Path | str) -> HostguardConfig:
    """Read a file and parse its `[hostguard]` table (see `parse_hostguard`)."""
    path = Path(path)
    text = _read_text(path)
    return parse_hostguard(text, str(path))
