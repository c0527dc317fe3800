"""Link and address events from netlink: one blocking reader thread, feeding the asyncio loop.

Addresses of both families are reported (IPv6 for dynamic DNS AAAA records); an event with
no address means one went away or became unfit, and a listener that keeps a set re-reads it
(`addresses` lists the current ones through the same parser).

The thread waits in select() on the netlink socket and a wake-up pipe, so stopping never
depends on an event arriving. Parsing is pure (`parse`), so it is tested without a socket."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from failberry.bus import AddressChanged

LOG = logging.getLogger(__name__)

IFF_LOWER_UP = 0x10000
MAIN_TABLE = 254
AF_INET, AF_INET6 = 2, 10
# ifa_flags (linux/if_addr.h). For IPv6, 0x01 means a temporary (RFC 8981 privacy) address.
IFA_F_TEMPORARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
# An IPv6 address with one of these is not one to use or publish: still in duplicate address
# detection, failed it, past its preferred lifetime, or a privacy address that changes daily
# and is meant for outgoing connections only.
_V6_UNFIT = IFA_F_TEMPORARY | IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE


@dataclass(frozen=True)
class LinkChanged:
    """An interface appeared, went away, or its carrier changed (the network part's own
    trigger to reconcile; not published on the bus: no other part reads it)."""

    interface: str
    present: bool
    carrier: bool


class RouteChanged:
    """A default route in `main` changed (a DHCP client's gateway); carries nothing else."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteChanged)

    def __hash__(self) -> int:
        return 1


Event = LinkChanged | AddressChanged | RouteChanged


class NetlinkSocket(Protocol):
    """An IPRoute bound to multicast groups."""

    def bind(self, *argv: Any, **kwarg: Any) -> Any: ...
    def get(self, *argv: Any, **kwarg: Any) -> Any: ...
    def fileno(self) -> int: ...
    def close(self, *argv: Any, **kwarg: Any) -> Any: ...


def parse(msg: Any, names: dict[int, str]) -> Event | None:
    """One netlink message as a bus event; `names` maps ifindex to name and is updated."""
    kind = msg.get("event")
    if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
        name = msg.get_attr("IFLA_IFNAME") or names.get(msg["index"], "")
        if kind == "RTM_DELLINK":
            names.pop(msg["index"], None)
            return LinkChanged(name, False, False)
        names[msg["index"]] = name
        return LinkChanged(name, True, bool(msg["flags"] & IFF_LOWER_UP))
    if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
        if msg["family"] not in (AF_INET, AF_INET6):
            return None
        family = 4 if msg["family"] == AF_INET else 6
        name = names.get(msg["index"]) or msg.get_attr("IFA_LABEL") or ""
        addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if kind == "RTM_DELADDR":
            return AddressChanged(name, None, family)
        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
        if family == 6 and flags & _V6_UNFIT:
            # Not an address to use (now or any more): tell listeners to look again, as for a
            # deleted one.
            return AddressChanged(name, None, family)
        return AddressChanged(name, addr, family)
    if kind in ("RTM_NEWROUTE", "RTM_DELROUTE"):
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        if msg["family"] == 2 and table == MAIN_TABLE and msg["dst_len"] == 0:
            return RouteChanged()
    return None


def addresses(nl: Any) -> list[AddressChanged]:
    """Every usable address now, as the events that would have announced it."""
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in nl.get_links()}
    out = []
    for msg in nl.get_addr():
        ev = parse(msg, names)
        if isinstance(ev, AddressChanged) and ev.address is not None:
            out.append(ev)
    return out


class LinkMonitor:
    """Reads netlink in a thread; `events` is an asyncio queue on the loop that started it."""

    def __init__(self, factory: Callable[[], NetlinkSocket],
                 initial_links: Callable[[], Iterable[tuple[int, str]]]) -> None:
        self.factory = factory
        self.initial_links = initial_links
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._sock: NetlinkSocket | None = None

    def start(self) -> None:
        """Bind, then start the reader thread."""
        loop = asyncio.get_running_loop()
        self._sock = self.factory()
        self._sock.bind()
        names = dict(self.initial_links())
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._read, args=(loop, self._sock, names),
                                        name="netlink-monitor", daemon=True)
        self._thread.start()

    def _read(self, loop: asyncio.AbstractEventLoop, sock: NetlinkSocket,
              names: dict[int, str]) -> None:
        while True:
            ready, _, _ = select.select([sock.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                msgs = sock.get()
            except Exception:
                LOG.exception("netlink monitor stopped")
                return
            for msg in msgs:
                event = parse(msg, names)
                if event is not None:
                    loop.call_soon_threadsafe(self.events.put_nowait, event)

    def stop(self) -> None:
        """Wake the thread, join it, close the socket."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
