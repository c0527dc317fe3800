"""The supervisor part: bus events in, the updater in the middle, status reports out.

It follows `PublishedAddressChanged` (the network part's choice: the active uplink's address),
or, with `dyndns.interface` set, that interface's `AddressChanged` events. Either way the
address is also the source of the update, so the request leaves through that uplink."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from pathlib import Path
from typing import Any

from failberry.bus import AddressChanged, Bus, PublishedAddressChanged
from failberry.config import Config, DnsProvider, DyndnsConfig
from failberry.dyndns.base import Provider, Record, Verifier
from failberry.dyndns.dyndns2 import Dyndns2Provider
from failberry.dyndns.http import HttpClient, RequestsClient
from failberry.dyndns.persist import DEFAULT_PATH, StateFile
from failberry.dyndns.rfc2136 import Rfc2136Provider
from failberry.dyndns.route53 import Route53Provider
from failberry.dyndns.route53_lambda import Route53LambdaProvider
from failberry.dyndns.updater import Timing, Updater
from failberry.dyndns.verify import AuthoritativeVerifier
from failberry.errors import NotBuiltYet
from failberry.status import DYNDNS, Status

LOG = logging.getLogger(__name__)


def usable(address: str) -> bool:
    """Whether an address may be published (not link-local, multicast or unspecified)."""
    ip = ipaddress.ip_address(address)
    return not (ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def make_provider(d: DyndnsConfig, http: HttpClient) -> Provider:
    """The configured provider with real I/O."""
    if d.provider is DnsProvider.RFC2136:
        return Rfc2136Provider.from_config(d.rfc2136)
    if d.provider is DnsProvider.DYNDNS2:
        return Dyndns2Provider.from_config(d.dyndns2, http)
    if d.provider is DnsProvider.ROUTE53_LAMBDA:
        return Route53LambdaProvider.from_config(d.route53_lambda, http)
    if d.provider is DnsProvider.ROUTE53:
        return Route53Provider.from_config(d.route53, http)
    raise NotBuiltYet(f"dyndns.provider {d.provider.value!r} has no implementation")


def make_verifier(d: DyndnsConfig) -> Verifier:
    """rfc2136: its primary is authoritative, ask it; otherwise find the zone's servers."""
    if d.provider is DnsProvider.RFC2136:
        return AuthoritativeVerifier([(d.rfc2136.server, d.rfc2136.port)])
    return AuthoritativeVerifier()


def records(d: DyndnsConfig) -> list[Record]:
    """A, and AAAA when `dyndns.ipv6` is set."""
    out = [Record(d.name, "A", d.ttl)]
    if d.ipv6:
        out.append(Record(d.name, "AAAA", d.ttl))
    return out


class DyndnsPart:
    """Keeps `dyndns.name` pointing at the published address."""

    name = DYNDNS
    deadline = 30.0

    def __init__(self, updater: Updater, status: Status, bus: Bus, *, provider: str,
                 interface: str = "", report_every: float = 5.0,
                 state: StateFile | None = None) -> None:
        self.updater = updater
        self.status = status
        self.provider = provider
        self.interface = interface
        self.report_every = report_every
        # Subscribe now, not in run(): events published before the loop starts us still count.
        self._published = bus.subscribe(PublishedAddressChanged)
        self._addresses = bus.subscribe(AddressChanged)
        self._report_now = asyncio.Event()
        self.state = state
        if state is not None:
            updater.restore(state.load())
        updater.on_change = self._changed

    def _changed(self) -> None:
        self._report_now.set()
        if self.state is not None:
            self.state.save(self.updater.holds())

    @classmethod
    def from_config(cls, cfg: Config, status: Status, bus: Bus,
                    http: HttpClient | None = None,
                    state_path: Path | None = DEFAULT_PATH) -> DyndnsPart:
        """The part with real providers for `cfg.dyndns`."""
        d = cfg.dyndns
        timing = Timing(check_interval=d.check_interval, retry_initial=d.retry_initial,
                        retry_max=d.retry_max)
        updater = Updater(make_provider(d, http or RequestsClient()), make_verifier(d),
                          records(d), timing=timing)
        state = StateFile(state_path, d) if state_path is not None else None
        return cls(updater, status, bus, provider=d.provider.value, interface=d.interface,
                   state=state)

    def on_published(self, ev: PublishedAddressChanged) -> None:
        """The network part chose a new address to publish."""
        if self.interface or ev.address is None or not usable(ev.address):
            return
        rdtype = "A" if ev.family == 4 else "AAAA"
        self.updater.set_address(rdtype, ev.address, ev.address,
                                 f"published address changed on {ev.uplink or 'an uplink'}")

    def on_address(self, ev: AddressChanged) -> None:
        """An interface's address changed (used when `dyndns.interface` is set)."""
        if not self.interface or ev.interface != self.interface or ev.address is None:
            return
        address = ev.address.split("/")[0]
        if not usable(address):
            return
        rdtype = "A" if ev.family == 4 else "AAAA"
        self.updater.set_address(rdtype, address, address, f"address changed on {ev.interface}")

    def report(self) -> None:
        """Write the status snapshot (the DyndnsReport keys, plus every record)."""
        views = self.updater.view()
        main = views[0]
        states = [v["state"] for v in views]
        for state in ("blocked", "updating", "retrying", "pending", "waiting"):
            if state in states:
                overall = state
                break
        else:
            overall = "ok"
        detail: dict[str, Any] = {
            "provider": self.provider,
            "record": main["record"],
            "address": main["published"],
            "published": main["published"],
            "last_success": main["last_success"],
            "last_confirmed": main["last_confirmed"],
            "last_error": main["last_error"],
            "next_retry": main["next_retry"],
            "records": views,
        }
        self.status.report(DYNDNS, overall, **detail)
        # `name` (DyndnsReport's key) collides with Status.report's own first parameter, so it
        # cannot go through **detail; set it on the report just written.
        self.status.parts[DYNDNS].detail["name"] = main["record"].split(" ")[0]

    async def _pump_published(self) -> None:
        while True:
            self.on_published(await self._published.get())

    async def _pump_addresses(self) -> None:
        while True:
            self.on_address(await self._addresses.get())

    async def _reporter(self) -> None:
        while True:
            self._report_now.clear()
            self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self.report_every)

    async def run(self) -> None:
        """Run until cancelled."""
        LOG.info("dyndns: keeping %s up to date via %s (following %s)",
                 ", ".join(str(s.record) for s in self.updater.states.values()), self.provider,
                 f"interface {self.interface}" if self.interface else "the published address")
        tasks = [asyncio.create_task(c, name=f"dyndns-{n}") for n, c in (
            ("updater", self.updater.run()), ("published", self._pump_published()),
            ("addresses", self._pump_addresses()), ("report", self._reporter()))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
