"""Ask the authoritative servers, not a cache, what a record holds: the periodic check that
notices drift (someone edited the zone, a provider lost the update) and triggers a repair."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from failberry.dyndns.base import DyndnsError, Record

LOG = logging.getLogger(__name__)


def _address(host: str, port: int) -> str:
    """`host` as an address; a name is resolved now (at check time, not at start)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][4][0])
    except OSError as e:
        raise DyndnsError("verify", host, f"cannot resolve server {host!r}: {e}") from None


class AuthoritativeVerifier:
    """Queries `servers` ((host, port) pairs), or else the zone's NS found through the
    system resolver, with recursion off, and returns the union of their answers.

    The union, not the first answer: a server that still holds an old address is drift too."""

    def __init__(self, servers: Sequence[tuple[str, int]] = (), timeout: float = 3.0,
                 resolver: dns.resolver.Resolver | None = None) -> None:
        self.servers = list(servers)
        self.timeout = timeout
        self._resolver = resolver

    def discover(self, name: str) -> list[tuple[str, int]]:
        """The addresses of the zone's name servers (the zone cut above `name`)."""
        res = self._resolver or dns.resolver.Resolver()
        try:
            zone = dns.resolver.zone_for_name(name, resolver=res)
            ns_names = [rd.target for rd in res.resolve(zone, "NS")]
            out: list[tuple[str, int]] = []
            for ns in ns_names:
                for rdtype in ("A", "AAAA"):
                    try:
                        out.extend((rd.address, 53) for rd in res.resolve(ns, rdtype))
                    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                        continue
        except dns.exception.DNSException as e:
            raise DyndnsError("verify", name, f"cannot find the authoritative servers: {e}")\
                from None
        if not out:
            raise DyndnsError("verify", name, f"zone {zone} has no reachable name servers")
        return out

    def lookup(self, record: Record) -> frozenset[str]:
        """What the authoritative servers answer for the record; raises if none answers."""
        servers = [(_address(h, p), p) for h, p in self.servers] or self.discover(record.name)
        q = dns.message.make_query(record.name, dns.rdatatype.from_text(record.rdtype))
        q.flags &= ~dns.flags.RD
        found: set[str] = set()
        answered = 0
        errors: list[str] = []
        for addr, port in servers:
            try:
                r = dns.query.udp(q, addr, port=port, timeout=self.timeout)
            except (OSError, dns.exception.DNSException) as e:
                errors.append(f"{addr}:{port}: {type(e).__name__}")
                continue
            if r.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or \
                    not r.flags & dns.flags.AA:
                errors.append(f"{addr}:{port}: {dns.rcode.to_text(r.rcode())}"
                              f"{'' if r.flags & dns.flags.AA else ' (not authoritative)'}")
                continue
            answered += 1
            want = dns.rdatatype.from_text(record.rdtype)
            for rrset in r.answer:
                if rrset.rdtype == want:
                    found.update(rd.to_text() for rd in rrset)
        if not answered:
            raise DyndnsError("verify", str(record), "no authoritative answer: "
                              + "; ".join(errors))
        if errors:
            LOG.debug("verify %s: some servers did not answer: %s", record, "; ".join(errors))
        return frozenset(found)
