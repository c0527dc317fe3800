"""Config rules that span keys (run after every key converted on its own); each names the key a
person should change."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from failberry.config import (
    Config,
    DnsProvider,
    DyndnsConfig,
    FailoverMode,
    HostguardConfig,
    port_bounds,
)
from failberry.units import parse_size


def cross_checks(cfg: Config, issue: Callable[[str, str], None]) -> None:
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
    hostguard_checks(cfg.hostguard, issue)


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


def hostguard_checks(hg: HostguardConfig, issue: Callable[[str, str], None]) -> None:
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
