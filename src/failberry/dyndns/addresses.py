"""Which address dynamic DNS should publish, from the interfaces' addresses.

The network part's choice (`PublishedAddressChanged`) covers IPv4 when it runs. Everything else
comes from an `AddressBook` kept from netlink: the addresses listed at start (an address that
was there before we started sends no event) and the monitor's `AddressChanged` events since.
`Chooser` turns the book into the address of one record type:

- `dyndns.interface` set: that interface's address;
- otherwise the active uplink's (the network part says which: `ActiveUplinkChanged`);
- with no network part running (`failberry run --no-network`): the first uplink, in priority
  order, that has one (no probes decide, so the order of the config does)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from failberry.bus import AddressChanged


def usable(address: str) -> bool:
    """Whether an address may be published (not link-local, loopback-v6, multicast or
    unspecified)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.is_loopback:
        return False
    return not (ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def family_of(rdtype: str) -> int:
    """4 for `A`, 6 for `AAAA`."""
    return 4 if rdtype == "A" else 6


@dataclass
class AddressBook:
    """Usable addresses per (interface, family), oldest first."""

    _by: dict[tuple[str, int], list[str]] = field(default_factory=dict)

    def reset(self, events: Iterable[AddressChanged]) -> None:
        """Start again from a listing."""
        self._by.clear()
        for ev in events:
            self.add(ev)

    def add(self, ev: AddressChanged) -> bool:
        """Take an address in; True if it is new. (Events without one are not for `add`.)"""
        if ev.address is None:
            return False
        address = ev.address.split("/")[0]
        if not usable(address):
            return False
        family = ipaddress.ip_address(address).version
        have = self._by.setdefault((ev.interface, family), [])
        if address in have:
            return False
        have.append(address)
        return True

    def best(self, interface: str, family: int) -> str | None:
        """The interface's oldest usable address of this family (the stable one: a new
        address added beside it does not move the name)."""
        have = self._by.get((interface, family))
        return have[0] if have else None


@dataclass
class Chooser:
    """What a record should hold, by the rules in the module docstring."""

    interface: str = ""
    uplinks: Sequence[tuple[str, str]] = ()  # (uplink name, interface), priority order
    network: bool = True  # a network part runs and says which uplink is active
    active: str | None = None

    def interfaces(self) -> list[str]:
        """The interfaces whose addresses matter."""
        return [self.interface] if self.interface else [i for _, i in self.uplinks]

    def choose(self, book: AddressBook, family: int) -> tuple[str | None, str]:
        """(address or None, where it comes from)."""
        if self.interface:
            return book.best(self.interface, family), self.interface
        if self.network:
            iface = dict(self.uplinks).get(self.active or "")
            if iface is None:
                return None, "the active uplink"
            return book.best(iface, family), f"{self.active} ({iface})"
        for name, iface in self.uplinks:
            address = book.best(iface, family)
            if address is not None:
                return address, f"{name} ({iface})"
        return None, "the uplinks"

    def following(self) -> str:
        """For status: what the part follows."""
        if self.interface:
            return f"interface {self.interface}"
        if self.network:
            return "the active uplink (network part)"
        return ("the first uplink with an address: "
                + ", ".join(f"{n} ({i})" for n, i in self.uplinks)
                + " (no network part: --no-network)")
