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


class Subscription(asyncio.Queue[E]):
    """One subscriber's queue of `kind` events, with a lifetime: `close()` (or leaving a
    `with` block) takes it off the bus, so a stopped part's queue stops filling up. It is
    the queue itself, so `await sub.get()` reads the next event."""

    def __init__(self, registry: list[Subscription[Any]], kind: type[E], maxsize: int) -> None:
        super().__init__(maxsize)
        self.kind = kind
        self._registry: list[Subscription[Any]] | None = registry
        registry.append(self)

    @property
    def closed(self) -> bool:
        """True once closed: no later event reaches this queue."""
        return self._registry is None

    def close(self) -> None:
        """Stop receiving events; closing twice is harmless."""
        if self._registry is not None:
            self._registry.remove(self)
            self._registry = None

    def __enter__(self) -> Subscription[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus:
    """Publish/subscribe by event type, within one asyncio loop.

    `scope()` gives a view of the same bus that remembers the subscriptions made through it;
    closing the view closes them all (the supervisor hands one to each generation of parts)."""

    def __init__(self, maxsize: int = 1000, *,
                 _subs: dict[type[Any], list[Subscription[Any]]] | None = None) -> None:
        self.maxsize = maxsize
        self._subs: dict[type[Any], list[Subscription[Any]]] = {} if _subs is None else _subs
        self._made: list[Subscription[Any]] = []
        self._adoptable: list[Subscription[Any]] = []

    def subscribe(self, kind: type[E]) -> Subscription[E]:
        """A queue that receives every later event of `kind` until it is closed (after
        `hand_over`, the open queue of that kind, with what it holds, if there is one)."""
        for sub in self._adoptable:
            if sub.kind is kind and not sub.closed:
                self._adoptable.remove(sub)
                self._made.append(sub)
                return sub
        sub = Subscription(self._subs.setdefault(kind, []), kind, self.maxsize)
        self._made = [s for s in self._made if not s.closed]
        self._made.append(sub)
        return sub

    def hand_over(self) -> None:
        """The part that subscribed through this view crashed and a fresh one is about to be
        built on it: each `subscribe(kind)` it makes takes over an open queue of that kind,
        with the events that arrived meanwhile (none is lost between the two objects).
        `taken_over()` then closes the queues nobody took."""
        self._adoptable = [s for s in self._adoptable + self._made if not s.closed]
        self._made = []

    def taken_over(self) -> None:
        """Close the queues `hand_over` offered and nobody took."""
        left, self._adoptable = self._adoptable, []
        for sub in left:
            sub.close()

    def subscribers(self, kind: type[Any]) -> int:
        """How many open subscriptions `kind` has."""
        return len(self._subs.get(kind, []))

    def scope(self) -> Bus:
        """A view of this bus whose `close()` closes what was subscribed through it."""
        return Bus(self.maxsize, _subs=self._subs)

    def close(self) -> None:
        """Close every subscription made through this bus (or view)."""
        made, self._made = self._made, []
        for sub in made:
            sub.close()
        self.taken_over()

    def publish(self, event: object) -> None:
        """Deliver to every subscriber of the event's type; never blocks."""
        for q in list(self._subs.get(type(event), [])):
            if q.full():
                LOG.warning("event queue for %s full; dropping the oldest",
                            type(event).__name__)
                q.get_nowait()
            q.put_nowait(event)
