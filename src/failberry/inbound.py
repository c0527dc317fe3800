"""Whether the mobile link can be reached from outside at all: an operator that gives a
carrier-grade NAT (100.64.0.0/10) or private address keeps every inbound connection out, so
port forwards, `/health` through the mobile path and a published DDNS name cannot work."""

from __future__ import annotations

import ipaddress

CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
PRIVATE = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                   "192.168.0.0/16"))


def not_public(address: str | None) -> str | None:
    """"a CGNAT address" or "a private address" for an IPv4 address outside can not reach;
    None otherwise (public, IPv6, or none)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("/")[0])
    except ValueError:
        return None
    if not isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip in CGNAT:
        return "a CGNAT address"
    if any(ip in n for n in PRIVATE):
        return "a private address"
    return None


def mobile_warning(address: str | None, public: str | None = None) -> str | None:
    """The plain sentence `/status` and `failberry status` show, or None. `public`: the
    address an outside "what is my address" URL saw for this one, when asked."""
    kind = not_public(address)
    if kind is not None:
        return (f"inbound through the mobile link will not work: the operator gives {kind} "
                f"({address}); ask for a public-IP APN")
    if address and public and public != address:
        return (f"inbound through the mobile link will not work: the operator NATs its "
                f"address ({address} is seen outside as {public}); ask for a public-IP APN")
    return None
