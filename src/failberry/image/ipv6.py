"""IPv6 on the image: the kernel's sysctls that decide which interfaces get an IPv6 address.

failberry routes and firewalls IPv4; its IPv6 firewall (net/firewall6.py) only guards the Pi
itself. So no interface takes an IPv6 address by default: not the LAN (failberry does not route
IPv6 to it, and a Pi answering router solicitations nobody configured would surprise the
admin), and not the uplinks (an address from a router advertisement on the mobile link is an
open door nobody asked for). Only `[dyndns] ipv6 = true`, which publishes an AAAA record from
an uplink's IPv6 address, asks for one: then the uplinks accept router advertisements and
autoconfigure, and the LAN still takes none. Loopback keeps ::1 (/etc/hosts names it)."""

from __future__ import annotations

from failberry.config import Config

SYSCTL_FILE = "/etc/sysctl.d/91-failberry-ipv6.conf"


def _key(interface: str, name: str) -> str:
    # The slash form: an interface name may hold a dot (a VLAN, eth0.10), which the dotted form
    # would read as a separator.
    return f"net/ipv6/conf/{interface}/{name}"


def ipv6_sysctls(cfg: Config) -> str:
    """The sysctl.d file's text for `cfg`."""
    wanted = cfg.dyndns.ipv6
    lines = ["# Written by failberry from the config: which interfaces take an IPv6 address.",
             "# `all` reaches interfaces already up when this is applied, `default` those that",
             "# appear later (USB sticks, ppp0); udev re-applies the per-interface lines."]
    if wanted:
        lines.append("# [dyndns] ipv6 = true: the uplinks take an address from router "
                     "advertisements.")
        value = {"disable_ipv6": "0", "accept_ra": "1", "autoconf": "1"}
    else:
        lines.append("# No IPv6 address on the LAN or the uplinks ([dyndns] ipv6 = false).")
        value = {"disable_ipv6": "1", "accept_ra": "0", "autoconf": "0"}
    for scope in ("all", "default"):
        lines += [f"{_key(scope, name)} = {v}" for name, v in value.items()]
    lines.append("# Loopback keeps ::1.")
    lines.append(f"{_key('lo', 'disable_ipv6')} = 0")
    lan = cfg.lan.interface
    lines.append(f"# The LAN ({lan}) never: failberry does not route IPv6 to it.")
    lines += [f"{_key(lan, 'disable_ipv6')} = 1", f"{_key(lan, 'accept_ra')} = 0",
              f"{_key(lan, 'autoconf')} = 0"]
    return "\n".join(lines) + "\n"
