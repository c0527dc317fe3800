"""RFC 2136 DNS UPDATE, signed with TSIG (RFC 8945), sent to the zone's primary server.

One UPDATE replaces the whole RRset (delete + add in one message, which the server applies
atomically), so the name never answers with two addresses or none."""

from __future__ import annotations

import ipaddress
import logging
import socket

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from failberry.config import Rfc2136Config, Secret
from failberry.dyndns.base import DyndnsError, Record, Retry, UpdateResult

LOG = logging.getLogger(__name__)

KIND = "rfc2136"

# Answers that no retry can fix: the server is not the primary, the key may not touch this name,
# the name is outside the zone, or our message is malformed.
_FATAL_RCODES = {dns.rcode.NOTAUTH, dns.rcode.REFUSED, dns.rcode.NOTZONE, dns.rcode.FORMERR,
                 dns.rcode.NOTIMP}


def resolve_server(host: str, port: int, source: str | None) -> str:
    """The server's address, in the source address's family when there is a choice."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    family = socket.AF_UNSPEC
    if source is not None:
        family = socket.AF_INET if ipaddress.ip_address(source).version == 4 else socket.AF_INET6
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except OSError as e:
        raise DyndnsError(KIND, host, f"cannot resolve server {host!r}: {e}") from None
    return str(infos[0][4][0])


def same_family(a: str, b: str | None) -> bool:
    """Whether `b` (a source address) can be used to reach `a`."""
    return b is not None and ipaddress.ip_address(a).version == ipaddress.ip_address(b).version


class Rfc2136Provider:
    """Sends TSIG-signed UPDATEs to `server:port` for names inside `zone`."""

    kind = KIND

    def __init__(self, server: str, zone: str, key_name: str, secret: Secret, *,
                 algorithm: str = "hmac-sha256", port: int = 53, timeout: float = 5.0) -> None:
        self.server = server
        self.port = port
        self.zone = dns.name.from_text(zone)
        self.key_name = key_name
        self.algorithm = algorithm
        self._secret = secret
        self.timeout = timeout

    @classmethod
    def from_config(cls, cfg: Rfc2136Config, timeout: float = 5.0) -> Rfc2136Provider:
        """From `[dyndns.rfc2136]` (validated: every key needed is set)."""
        assert cfg.tsig_secret is not None
        return cls(cfg.server, cfg.zone, cfg.tsig_key_name, cfg.tsig_secret,
                   algorithm=cfg.tsig_algorithm, port=cfg.port, timeout=timeout)

    def message(self, record: Record, address: str) -> dns.update.UpdateMessage:
        """The signed UPDATE that makes `record` hold exactly `address`."""
        keyring = dns.tsigkeyring.from_text({self.key_name: (self.algorithm,
                                                             self._secret.reveal())})
        upd = dns.update.UpdateMessage(self.zone, keyring=keyring,
                                       keyname=dns.name.from_text(self.key_name),
                                       keyalgorithm=self.algorithm)
        upd.replace(dns.name.from_text(record.name), record.ttl, record.rdtype, address)
        return upd

    def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
        """Send one UPDATE; raise DyndnsError saying whether a retry can help."""
        where = f"{self.server}:{self.port}"
        server = resolve_server(self.server, self.port, source)
        src = source if same_family(server, source) else None
        msg = self.message(record, address)
        try:
            resp = dns.query.udp(msg, server, timeout=self.timeout, port=self.port, source=src)
            if resp.flags & dns.flags.TC:
                resp = dns.query.tcp(msg, server, timeout=self.timeout, port=self.port,
                                     source=src)
        except dns.tsig.PeerBadKey:
            raise DyndnsError(KIND, str(record), f"{where} does not know TSIG key "
                              f"{self.key_name!r} (BADKEY); check dyndns.rfc2136.tsig_key_name",
                              retry=Retry.NEVER) from None
        except dns.tsig.PeerBadSignature:
            raise DyndnsError(KIND, str(record), f"{where} rejected the TSIG signature of key "
                              f"{self.key_name!r} (BADSIG); check dyndns.rfc2136.tsig_secret "
                              f"and tsig_algorithm", retry=Retry.NEVER) from None
        except dns.tsig.PeerBadTime:
            # A Pi has no real-time clock: until NTP has set it, every signature is "from the
            # past". That heals by itself, so keep retrying with backoff.
            raise DyndnsError(KIND, str(record), f"{where} says our clock is off (BADTIME); "
                              "waiting for the clock to be set") from None
        except dns.exception.Timeout:
            raise DyndnsError(KIND, str(record), f"no answer from {where} within "
                              f"{self.timeout:g}s") from None
        except (OSError, dns.exception.DNSException) as e:
            raise DyndnsError(KIND, str(record), f"sending to {where} failed: "
                              f"{type(e).__name__}: {e}") from None
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            retry = Retry.NEVER if rcode in _FATAL_RCODES else Retry.SOON
            raise DyndnsError(KIND, str(record), f"{where} answered "
                              f"{dns.rcode.to_text(rcode)} to the update of zone {self.zone}",
                              retry=retry)
        LOG.debug("%s: %s now %s (via %s from %s)", KIND, record, address, where, src or "any")
        return UpdateResult(address=address, changed=True, detail=f"{where} NOERROR")
