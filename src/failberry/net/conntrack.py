"""Conntrack clean-ups through ctnetlink (pyroute2's `NFCTSocket`), never a subprocess.

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
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from failberry.errors import FailberryError

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


@dataclass(frozen=True)
class Flow:
    """One IPv4 conntrack entry: its original and reply tuples' addresses and its status."""

    proto: int
    src: str
    dst: str
    reply_src: str
    reply_dst: str
    status: int
    id: int | None = None
    key: Any = field(default=None, compare=False, repr=False)  # CTA_TUPLE_ORIG, to delete by


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


def _plain(nla: Any) -> dict[str, Any]:
    """A dumped nla as the `{'attrs': [...]}` form pyroute2 encodes, to send a tuple back."""
    return {"attrs": [[name, _plain(v) if hasattr(v, "get_attr") else v]
                      for name, v in nla["attrs"]]}


def _flow(msg: Any) -> Flow | None:
    orig, reply = msg.get_attr("CTA_TUPLE_ORIG"), msg.get_attr("CTA_TUPLE_REPLY")
    if orig is None or reply is None:
        return None
    oip, rip = orig.get_attr("CTA_TUPLE_IP"), reply.get_attr("CTA_TUPLE_IP")
    proto = orig.get_attr("CTA_TUPLE_PROTO")
    addrs = (oip.get_attr("CTA_IP_V4_SRC"), oip.get_attr("CTA_IP_V4_DST"),
             rip.get_attr("CTA_IP_V4_SRC"), rip.get_attr("CTA_IP_V4_DST"))
    if None in addrs or proto is None:
        return None
    return Flow(int(proto.get_attr("CTA_PROTO_NUM") or 0), *addrs,
                status=int(msg.get_attr("CTA_STATUS") or 0), id=msg.get_attr("CTA_ID"),
                key=_plain(orig))


def local_addresses() -> frozenset[str]:
    """Every IPv4 address on this host's interfaces (this network namespace)."""
    from pyroute2 import IPRoute

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
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

        try:
            local = self.local()
            with NFCTSocket(nfgen_family=socket.AF_INET) as ct:
                flows = [f for f in map(_flow, ct.dump()) if f is not None]
                gone = 0
                for f in select(flows, local):
                    try:
                        # With its id, only this very entry goes, not a new one that has
                        # taken the same tuple since the dump.
                        ct.entry("del", tuple_orig=f.key, id=f.id)
                        gone += 1
                    except NetlinkError as e:
                        if e.code != errno.ENOENT:  # already gone: fine
                            raise
                return gone
        except (NetlinkError, OSError) as e:
            raise ConntrackError(f"delete {what}", e) from e
