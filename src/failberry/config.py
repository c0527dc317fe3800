"""The config model: one TOML file into frozen dataclasses, every error collected with its key
path, unknown keys refused, secrets masked everywhere they could be printed. The fields and
converters are `failberry.schema`, the loader `failberry.schema_loader`, the `[dyndns]` tables
`failberry.config_dyndns`; rules spanning keys are `failberry.config_checks`."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path

from failberry import checks
from failberry import upkeep as _upkeep
from failberry.alerts import spec as alert_spec
from failberry.config_dyndns import DnsProvider as DnsProvider  # noqa: PLC0414 (re-exported)
from failberry.config_dyndns import Dyndns2Config as Dyndns2Config  # noqa: PLC0414
from failberry.config_dyndns import DyndnsConfig as DyndnsConfig  # noqa: PLC0414
from failberry.config_dyndns import Rfc2136Config as Rfc2136Config  # noqa: PLC0414
from failberry.config_dyndns import Route53Config as Route53Config  # noqa: PLC0414
from failberry.config_dyndns import Route53LambdaConfig as Route53LambdaConfig  # noqa: PLC0414
from failberry.errors import ConfigError
from failberry.schema import Secret as Secret  # noqa: PLC0414 (re-exported)
from failberry.schema import abs_path as _abs_path
from failberry.schema import bad as _bad
from failberry.schema import command as _command
from failberry.schema import dev_path as _dev_path
from failberry.schema import duration as _duration
from failberry.schema import enum_of as _enum
from failberry.schema import int_range as _int_range
from failberry.schema import no_quotes as _no_quotes
from failberry.schema import one_of as _one_of
from failberry.schema import opt, section
from failberry.schema import optional_string as _optional_str
from failberry.schema import percent as _percent
from failberry.schema import port_bounds as port_bounds  # noqa: PLC0414 (re-exported)
from failberry.schema import port_list as _port_list
from failberry.schema import port_range as _port_range
from failberry.schema import size as _size
from failberry.schema import string as _str
from failberry.schema import string_list as _str_list
from failberry.schema import toml_key as _toml_key
from failberry.schema import type_name as _type_name
from failberry.schema import usb_id as _usb_id
from failberry.schema_loader import Loader as _Loader
from failberry.schema_loader import parse_toml as _toml
from failberry.schema_loader import read_text as _read_text
from failberry.units import parse_size

DEFAULT_PATH = Path("/etc/failberry/failberry.toml")


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
    security_updates: bool = opt(True, doc="unattended-upgrades installs Debian security "
                                 "updates daily")
    reboot_window: str = opt("03:00-05:00", _optional_str(_upkeep.parse_window),
                             doc="local time when an upgrade may reboot the Pi (gateway mode: "
                             "never while the mobile link is active); empty: never")
    updates_over_mobile: bool = opt(False, doc="gateway mode: let apt download while the "
                                    "mobile (metered) link is active (sidecar: always)")


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


def parse(text: str, source: str = "failberry.toml", base_dir: Path | None = None) -> Config:
    """Parse config text; raise ConfigError listing every problem found."""
    data = _toml(text, source)
    loader = _Loader(base_dir or Path.cwd())
    cfg = loader.build(Config, data, "")
    if not loader.issues:
        from failberry.config_checks import cross_checks

        cross_checks(cfg, loader.issue)
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
        from failberry.config_checks import hostguard_checks

        hostguard_checks(hg, loader.issue)
    if loader.issues:
        raise ConfigError(source, loader.issues)
    assert isinstance(hg, HostguardConfig)
    return hg


def load_hostguard(path: Path | str) -> HostguardConfig:
    """Read a file and parse its `[hostguard]` table (see `parse_hostguard`)."""
    path = Path(path)
    text = _read_text(path)
    return parse_hostguard(text, str(path))
