"""Conntrack clean-ups through ctnetlink (`failberry.net.ctnetlink`), never a subprocess.

- On a switch, forget the LAN flows NATed through the uplink we left, so their clients reconnect
  at once through the new one instead of sending into a NAT binding that names the old address.
- At start, forget the LAN flows that left through an uplink before NAT was in place. NAT is
  decided on a flow's first packet, so such an entry keeps the private source for as long as
  packets keep it alive: a UDP stream from a fixed port would leak its LAN address for good.

Which flows go is decided by pure functions over `Flow`s. The router's own flows (a source that
is one of its addresses, e.g. the probes) are never deleted, and a flow that vanished between
the dump and the delete is what we wanted anyway, not an error."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from failberry.errors import FailberryError
from failberry.net.ctnetlink import CtNetlink, Flow

LOG = logging.getLogger(__name__)

# include/uapi/linux/netfilter/nf_conntrack_common.h
IPS_SRC_NAT = 1 << 4
IPS_DST_NAT = 1 << 5


class ConntrackError(FailberryError):
    """A ctnetlink request failed; names what was being done."""

    def __init__(self, what: str, error: Exception) -> None:
        super().__init__(f"conntrack (netlink): {what}: {error}")


class FlowFlusher(Protocol):
    """Deletes conntrack entries."""

    async def flush_nat(self, address: str) -> int:
        """Delete the LAN flows source-NATed to `address`; how many."""

    async def drop_unnated(self, lan: str) -> int:
        """Delete the flows from the `lan` prefix that left un-NATed; how many."""


def _mine(f: Flow, local: frozenset[str]) -> bool:
    return f.src in local


def nat_flows_to(flows: Iterable[Flow], address: str, local: frozenset[str]) -> list[Flow]:
    """The forwarded flows source-NATed to `address` (their replies come back to it)."""
    return [f for f in flows if f.status & IPS_SRC_NAT and f.reply_dst == address
            and f.src != address and not _mine(f, local)]


def _routed(dst: str, lan: ipaddress.IPv4Network, local: frozenset[str]) -> bool:
    ip = ipaddress.IPv4Address(dst)
    return not (ip in lan or dst in local or ip.is_multicast or ip.is_loopback
                or ip.is_unspecified or dst == "255.255.255.255")


def unnated_flows(flows: Iterable[Flow], lan: str, local: frozenset[str]) -> list[Flow]:
    """Flows from the LAN prefix to a routed destination that went out without NAT: no NAT
    status, and the reply still goes to the private source. Flows to the router itself, to
    the LAN, broadcasts and multicasts are left alone."""
    net = ipaddress.ip_interface(lan).network
    assert isinstance(net, ipaddress.IPv4Network)
    return [f for f in flows if not f.status & (IPS_SRC_NAT | IPS_DST_NAT)
            and f.reply_dst == f.src and ipaddress.IPv4Address(f.src) in net
            and not _mine(f, local) and _routed(f.dst, net, local)]


def local_addresses() -> frozenset[str]:
    """Every IPv4 address on this host's interfaces (this network namespace)."""
    from failberry.net.rtnl import IPRoute

    with IPRoute() as ipr:
        found = set()
        for msg in ipr.get_addr(family=socket.AF_INET):
            for attr in ("IFA_LOCAL", "IFA_ADDRESS"):
                if (a := msg.get_attr(attr)) is not None:
                    found.add(str(a))
        return frozenset(found)


Selector = Callable[[Sequence[Flow], frozenset[str]], list[Flow]]


class NetlinkConntrack:
    """The real one: ctnetlink in the calling process's network namespace."""

    def __init__(self, local: Callable[[], frozenset[str]] = local_addresses) -> None:
        self.local = local

    async def flush_nat(self, address: str) -> int:
        """Delete the LAN flows source-NATed to `address`; how many."""
        n = await asyncio.to_thread(self._delete, f"flows NATed to {address}",
                                    lambda flows, local: nat_flows_to(flows, address, local))
        self._log(n, "NATed to %s", address)
        return n

    async def drop_unnated(self, lan: str) -> int:
        """Delete the flows from the `lan` prefix that left un-NATed; how many."""
        n = await asyncio.to_thread(self._delete, f"un-NATed flows from {lan}",
                                    lambda flows, local: unnated_flows(flows, lan, local))
        self._log(n, "from %s that had left without NAT", lan)
        return n

    @staticmethod
    def _log(n: int, what: str, arg: str) -> None:
        level = logging.INFO if n else logging.DEBUG
        LOG.log(level, "deleted %d conntrack entries " + what, n, arg)

    def _delete(self, what: str, select: Selector) -> int:
        try:
            local = self.local()
            with CtNetlink() as ct:
                # Each delete names the entry's id: only that very entry goes, not a new one
                # that has taken the same tuple since the dump; one that is gone already is
                # what we wanted.
                return sum(ct.delete(f) for f in select(ct.dump(), local))
        except OSError as e:
            raise ConntrackError(f"delete {what}", e) from e
