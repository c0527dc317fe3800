"""What every dynamic DNS provider offers, and the errors that tell the updater what to do next.

A provider makes one attempt to point a name at an address and says how it went; the updater
owns timing (retries, backoff, verification). The error's `retry` says whether another attempt
can help: soon (a timeout), only much later (the provider's own outage, dyndns2 `911`), or not
until a person changes the config (bad credentials, a name the account does not hold)."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Protocol

from failberry.errors import FailberryError


class Retry(enum.StrEnum):
    """When an attempt that failed may be tried again."""

    SOON = "soon"      # transient: exponential backoff with jitter
    LATER = "later"    # the provider asked us to stay away for a while (floor: `retry_after`)
    NEVER = "never"    # needs a config change; retrying only hurts (dyndns2 blocks abusers)


def record_type(address: str) -> str:
    """`A` for an IPv4 address, `AAAA` for IPv6."""
    return "A" if ipaddress.ip_address(address).version == 4 else "AAAA"


@dataclass(frozen=True)
class Record:
    """One address record to publish: `name` (absolute, no trailing dot), `A`/`AAAA`, TTL."""

    name: str
    rdtype: str
    ttl: int

    def __str__(self) -> str:
        return f"{self.name} {self.rdtype}"


@dataclass(frozen=True)
class UpdateResult:
    """A successful attempt: what the provider now publishes and whether that was news to it."""

    address: str
    changed: bool
    detail: str = ""


class DyndnsError(FailberryError):
    """An update or a lookup failed; the message names the provider, record and reason."""

    def __init__(self, provider: str, record: str, reason: str, *, retry: Retry = Retry.SOON,
                 retry_after: float = 0.0) -> None:
        self.provider = provider
        self.record = record
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after
        super().__init__(f"{provider}: {record}: {reason}")


class Provider(Protocol):
    """Points a record at an address. Blocking; the updater calls it from a worker thread."""

    kind: str

    def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
        """One attempt; `source` is the local address to send from (None: the kernel picks).

        Raises DyndnsError with the right `retry`."""
        ...


class Verifier(Protocol):
    """Asks the name's authoritative servers what the record holds right now."""

    def lookup(self, record: Record) -> frozenset[str]:
        """The addresses the authoritative servers answer (empty: no such record).

        Raises DyndnsError when no server answers."""
        ...
