"""Config back to text: TOML for the image (secrets inlined, file mode 0600) and a short,
masked summary for people."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from failberry.config import Config, DnsProvider, FailoverMode
from failberry.schema import Duration, Secret, Size, converter, toml_key
from failberry.units import format_duration, format_size, human_size


def _toml_value(f: dataclasses.Field[Any], value: Any, reveal: bool) -> str:
    """A field's value as TOML; durations and sizes (by their schema converter) as text such
    as "2s" and "1GiB", which reads back to the same value."""
    conv = converter(f)
    if isinstance(value, Secret):
        return json.dumps(value.reveal() if reveal else str(value))
    if isinstance(value, enum.Enum):
        return json.dumps(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(conv, Duration) and isinstance(value, float | int):
        return json.dumps(format_duration(float(value)))
    if isinstance(conv, Size) and isinstance(value, int):
        return json.dumps(format_size(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON strings are valid TOML basic strings
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(f, v, reveal) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__}")


def dump_toml(cfg: Config, *, reveal_secrets: bool) -> str:
    """The effective config as TOML that `config.parse` reads back to an equal Config.

    With `reveal_secrets`, secrets given as `*_file` on the admin's machine are inlined, since
    those paths do not exist on the Pi; such output must be written with mode 0600.
    """
    out: list[str] = ["# Written by failberry; the effective config, every default spelled out."]

    def walk(obj: Any, table: str) -> None:
        scalars: list[str] = []
        subs: list[tuple[str, Any]] = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = toml_key(f.name)
            if dataclasses.is_dataclass(value):
                subs.append((key, value))
            elif value is not None:
                scalars.append(f"{key} = {_toml_value(f, value, reveal_secrets)}")
        if scalars:
            out.append("")
            out.append(f"[{table}]")
            out.extend(scalars)
        for key, value in subs:
            walk(value, f"{table}.{key}")

    reveal = reveal_secrets
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, tuple):  # a list of tables: `[[forward]]`, one per entry
            for item in value:
                out.append("")
                out.append(f"[[{toml_key(f.name)}]]")
                out.extend(f"{g.name} = {_toml_value(g, getattr(item, g.name), reveal)}"
                           for g in dataclasses.fields(item))
            continue
        walk(value, toml_key(f.name))
    return "\n".join(out) + "\n"


def summary(cfg: Config) -> list[str]:
    """A short, secret-free description of what the config will do."""
    lines = [
        f"image:    {cfg.image.board.value} ({cfg.image.board.arch}), Debian {cfg.image.suite}, "
        f"hostname {cfg.image.hostname}, {human_size(cfg.image.size)}",
    ]
    keys = len(cfg.admin.ssh_authorized_keys)
    login = f"{keys} SSH key(s)" if keys else "no SSH key (the build makes one)"
    if cfg.admin.password_hash is not None:
        login += ", password hash set"
    lines.append(f"admin:    {cfg.admin.user}, {login}, timezone {cfg.admin.timezone}")
    lan = f"lan:      {cfg.lan.interface} {cfg.lan.address}"
    if cfg.lan.gateway:
        lan += f", main router {cfg.lan.gateway}"
    lines.append(lan)
    mode = cfg.failover.mode
    if mode is FailoverMode.GATEWAY:
        w = cfg.uplink.wired
        lines.append(f"mode:     gateway: wired {w.interface} ({w.address}) primary, "
                     f"mobile {cfg.uplink.mobile.interface} backup")
    else:
        lines.append(f"mode:     sidecar: LAN traffic NATed out of {cfg.uplink.mobile.interface}")
        if cfg.uplink.wired.interface:
            # The main router owns the wired link in sidecar mode: failberry neither routes
            # nor firewalls it, which a user who set it would not expect without being told.
            lines.append(f"note:     uplink.wired.interface = {cfg.uplink.wired.interface!r} is "
                         "ignored in sidecar mode (not routed, not firewalled); use "
                         "failover.mode = \"gateway\" if the Pi owns that link")
    pin = "PIN set" if cfg.modem.pin is not None else "no PIN"
    if cfg.modem.enabled:
        lines.append(f"modem:    {cfg.modem.device}, APN {cfg.modem.apn}, "
                     f"dial {cfg.modem.dial}, {pin}")
    else:
        lines.append(f"modem:    off (modem.enabled = false): something else brings up "
                     f"{cfg.uplink.mobile.interface}")
    cap = format_size(cfg.failover.data_cap) if cfg.failover.data_cap else "none"
    allowed = len(cfg.failover.allowed_devices) or "all"
    lines.append(f"mobile:   data cap {cap}, devices allowed: {allowed}")
    opened = [f"{p}/tcp" for p in cfg.firewall.allow_tcp] + [
        f"{p}/udp" for p in cfg.firewall.allow_udp]
    lines.append(f"firewall: open on uplinks: {', '.join(opened) or 'nothing'}")
    for fw in cfg.forward:
        to = f"{fw.to}:{fw.to_port or fw.port}"
        lines.append(f"forward:  {fw.name} -> {to} on {', '.join(fw.uplinks) or 'every uplink'}")
    lines.append(f"health:   http://{cfg.health.listen}:{cfg.health.port}/health")
    if cfg.dyndns.provider is DnsProvider.NONE:
        lines.append("dyndns:   off")
    else:
        lines.append(f"dyndns:   {cfg.dyndns.provider.value}, {cfg.dyndns.name}, "
                     f"check every {format_duration(cfg.dyndns.check_interval)}")
    return lines
