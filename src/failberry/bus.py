"""Events the supervisor's parts tell each other, and the in-loop bus that carries them.

Parts never call each other; they publish facts and subscribe to the kinds they care about.
A subscriber that falls behind loses the oldest events, never blocks the publisher."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, TypeVar

LOG = logging.getLogger(__name__)

E = TypeVar("E")


@dataclass(frozen=True)
class AddressChanged:
    """An interface gained or lost an address (`address` None: gone). From netlink or pppd."""

    interface: str
    address: str | None
    family: int = 4


@dataclass(frozen=True)
class LinkChanged:
    """An interface appeared, went away, or its carrier changed."""

    interface: str
    present: bool
    carrier: bool


@dataclass(frozen=True)
class UplinkHealth:
    """The probes' verdict for one uplink (`wired` or `mobile`), with the reason."""

    uplink: str
    up: bool
    reason: str
    latency_ms: float | None = None
    loss_pct: float | None = None


@dataclass(frozen=True)
class ActiveUplinkChanged:
    """The failover policy chose a new active uplink (None: none works)."""

    uplink: str | None
    previous: str | None
    reason: str


@dataclass(frozen=True)
class ModemStateChanged:
    """The modem state machine moved (`connected` means ppp is up on `interface`)."""

    state: str
    previous: str
    reason: str
    interface: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class PublishedAddressChanged:
    """The address the world should reach us at changed (what dynamic DNS publishes)."""

    address: str | None
    uplink: str | None
    family: int = 4


@dataclass(frozen=True)
class DyndnsBlocked:
    """The DNS provider refused an update for good (abuse, bad auth): it needs a person."""

    record: str
    reason: str


@dataclass(frozen=True)
class ForceUplink:
    """An admin (an SMS command) asks for `uplink` to carry traffic for `seconds`, whatever
    the probes say; `uplink` None ends an earlier force. The network part is to honour it."""

    uplink: str | None
    seconds: float
    reason: str


class Bus:
    """Publish/subscribe by event type, within one asyncio loop."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subs: dict[type[Any], list[asyncio.Queue[Any]]] = {}

    def subscribe(self, kind: type[E]) -> asyncio.Queue[E]:
        """A queue that receives every later event of `kind`."""
        q: asyncio.Queue[E] = asyncio.Queue(self.maxsize)
        self._subs.setdefault(kind, []).append(q)
        return q

    def publish(self, event: object) -> None:
        """Deliver to every subscriber of the event's type; never blocks."""
        for q in self._subs.get(type(event), []):
            if q.full():
                LOG.warning("event queue for %s full; dropping the oldest",
                            type(event).__name__)
                q.get_nowait()
            q.put_nowait(event)
