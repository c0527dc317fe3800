"""`uplink.mobile.interface = "auto"`: the mobile uplink is whatever interface the modem part
says its link is on (`ppp0`, `wwan0`, `usb0`, `eth1`), found again after every
re-enumeration. The modem part already announces it (`ModemStateChanged.interface`); the
network part follows it through `follow`, with the config it plans from resolved by
`resolve_mobile`. Also: whether the mobile address is private (a HiLink stick's own NAT, or
the operator's CGNAT), which the status shows because inbound then cannot reach the Pi."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import weakref
from collections.abc import Awaitable, Callable

from failberry.bus import Bus, ModemStateChanged
from failberry.config import Config

LOG = logging.getLogger(__name__)

AUTO = "auto"
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Configs made by `resolve_mobile`: still "auto" at heart (a network part restarted after a
# crash is built from the resolved config and must go on following).
_RESOLVED: weakref.WeakSet[Config] = weakref.WeakSet()


def resolve_mobile(cfg: Config, interface: str) -> Config:
    """`cfg` with the mobile uplink's interface set to `interface`."""
    mobile = dataclasses.replace(cfg.uplink.mobile, interface=interface)
    out = dataclasses.replace(cfg, uplink=dataclasses.replace(cfg.uplink, mobile=mobile))
    _RESOLVED.add(out)
    return out


async def follow(bus: Bus, cfg: Config, apply: Callable[[str], Awaitable[None]]) -> None:
    """With `uplink.mobile.interface = "auto"`, `apply(name)` each time the modem's link comes
    up on an interface other than the last; otherwise return at once."""
    if cfg.uplink.mobile.interface != AUTO and cfg not in _RESOLVED:
        return
    current: str | None = None
    with bus.subscribe(ModemStateChanged) as changes:  # closed when the caller cancels us
        while True:
            event = await changes.get()
            if event.interface and event.interface != current:
                LOG.info("mobile uplink follows the modem: %s -> %s", current or AUTO,
                         event.interface)
                current = event.interface
                await apply(current)


def private_address(address: str | None) -> bool | None:
    """Is the mobile address private (RFC 1918, or CGNAT 100.64/10)? None without one."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ip.is_private or (ip.version == 4 and ip in CGNAT)
