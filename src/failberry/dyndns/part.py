"""The supervisor part: bus events in, the updater in the middle, status reports out.

The A record follows `PublishedAddressChanged` (the network part's choice: the active uplink's
address); AAAA, and both with `dyndns.interface` set or without a network part, follow the
interfaces' addresses (`failberry.dyndns.addresses`): listed at start, then kept from the
network part's netlink events on the bus, or from the part's own monitor when no network part
runs. Either way the address is also the source of the update, so the request leaves through
that uplink."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failberry.aio import within
from failberry.bus import (
    ActiveUplinkChanged,
    AddressChanged,
    Bus,
    DyndnsBlocked,
    PublishedAddressChanged,
)
from failberry.config import Config, DnsProvider, DyndnsConfig
from failberry.dyndns.addresses import AddressBook, Chooser, family_of, usable
from failberry.dyndns.base import Provider, Record, Verifier
from failberry.dyndns.dyndns2 import Dyndns2Provider
from failberry.dyndns.http import HttpClient, RequestsClient
from failberry.dyndns.persist import STATE_FILE, StateFile
from failberry.dyndns.rfc2136 import Rfc2136Provider
from failberry.dyndns.route53 import Route53Provider
from failberry.dyndns.route53_lambda import Route53LambdaProvider
from failberry.dyndns.updater import RecordState, Timing, Updater
from failberry.dyndns.verify import AuthoritativeVerifier
from failberry.inbound import not_public
from failberry.net.monitor import LinkMonitor
from failberry.parts import Seams
from failberry.reports import DyndnsReport
from failberry.status import DYNDNS, Status, report_dyndns
from failberry.timegate import TimeGate, open_gate

LOG = logging.getLogger(__name__)

__all__ = ["DyndnsPart", "Kept", "build", "usable"]

Lister = Callable[[], list[AddressChanged]]


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
    # Only "none" is left, and `build_parts` builds no dyndns part for it.
    raise ValueError(f"dyndns.provider {d.provider.value!r}: there is no provider to make")


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


@dataclass(frozen=True)
class Kept:
    """What a crashed dyndns part hands the one built in its place."""

    records: Mapping[str, RecordState]  # by record type
    active: str | None  # the active uplink
    blocked: frozenset[str]  # records whose block was published on the bus
    refused: frozenset[str]  # unreachable addresses already logged


class DyndnsPart:
    """Keeps `dyndns.name` pointing at the published address."""

    name = DYNDNS
    deadline = 30.0

    def __init__(self, updater: Updater, status: Status, bus: Bus, *, provider: str,
                 interface: str = "", report_every: float = 5.0,
                 state: StateFile | None = None, lister: Lister | None = None,
                 uplinks: Sequence[tuple[str, str]] = (), network: bool = True,
                 monitor: LinkMonitor | None = None, kept: Kept | None = None,
                 time_gate: TimeGate | None = None) -> None:
        self.updater = updater
        # TSIG and Route53's signatures need the right time: no update before the clock is
        # good (failberry.timegate); None: never wait.
        self.time_gate = time_gate or open_gate()
        self._time_wait: str | None = None  # why it waits for the time, while it does
        self.status = status
        self.provider = provider
        self.interface = interface
        self.report_every = report_every
        self.lister = lister
        self.monitor = monitor
        self.book = AddressBook()
        self.chooser = Chooser(interface, uplinks, network)
        # Subscribe now, not in run(): events published before the loop starts us still count
        # (the supervisor closes them when the part stops, or hands them to its successor).
        self._published = bus.subscribe(PublishedAddressChanged)
        # With its own link monitor the part reads netlink, not the bus's addresses.
        self._addresses = bus.subscribe(AddressChanged) if monitor is None else None
        self._active = bus.subscribe(ActiveUplinkChanged)
        self._report_now = asyncio.Event()
        self.bus = bus
        self._blocked: set[str] = set()  # records whose block was published (alerts)
        self._refused: set[str] = set()  # CGNAT/private addresses not published (logged)
        self.state = state
        if kept is not None:
            self._take(kept)
        elif state is not None:
            updater.restore(state.load())
        updater.on_change = self._changed

    def handover(self) -> Kept:
        """What the part built after this one crashed must not forget: each record's state
        (blocked, backing off, what was sent and published, the address it should hold: the
        network part says an address only when it changes) and the active uplink."""
        return Kept({t: dataclasses.replace(st, in_flight=False)
                     for t, st in self.updater.states.items()},
                    self.chooser.active, frozenset(self._blocked), frozenset(self._refused))

    def _take(self, kept: Kept) -> None:
        for t, st in kept.records.items():
            if t in self.updater.states and st.record == self.updater.states[t].record:
                self.updater.states[t] = dataclasses.replace(st)
        self.chooser.active = kept.active
        self._blocked = set(kept.blocked)  # published once, not again by each new part
        self._refused = set(kept.refused)

    def _changed(self) -> None:
        self._report_now.set()
        for st in self.updater.states.values():
            if st.blocked is not None and str(st.record) not in self._blocked:
                self._blocked.add(str(st.record))
                self.bus.publish(DyndnsBlocked(str(st.record), st.blocked))
        if self.state is not None:
            self.state.save(self.updater.holds())

    def on_published(self, ev: PublishedAddressChanged) -> None:
        """The network part chose a new address to publish (the A record's source)."""
        if ev.uplink is not None and ev.uplink != self.chooser.active:
            self.on_active(ActiveUplinkChanged(ev.uplink, self.chooser.active, "published"))
        if self.interface or ev.address is None or not usable(ev.address):
            return
        if self._unreachable(ev.address):
            return
        rdtype = "A" if ev.family == 4 else "AAAA"
        self.updater.set_address(rdtype, ev.address, ev.address,
                                 f"published address changed on {ev.uplink or 'an uplink'}")

    def on_active(self, ev: ActiveUplinkChanged) -> None:
        """The network part switched uplinks: AAAA follows (A comes with the published
        address)."""
        if ev.uplink is None or ev.uplink == self.chooser.active:
            return
        self.chooser.active = ev.uplink
        self._refresh(f"active uplink now {ev.uplink}")

    def on_address(self, ev: AddressChanged) -> bool:
        """An interface gained an address; False when the book must be read again (one
        went away)."""
        if ev.interface not in self.chooser.interfaces():
            return True
        if ev.address is None:
            return False
        if self.book.add(ev):
            self._refresh(f"address changed on {ev.interface}")
        return True

    def _refresh(self, why: str) -> None:
        """Tell the updater what each record should hold now (the network part's published
        address keeps deciding A when it runs and no interface is set)."""
        for rdtype in self.updater.states:
            if rdtype == "A" and self.chooser.network and not self.interface:
                continue
            address, _where = self.chooser.choose(self.book, family_of(rdtype))
            if address is not None and not self._unreachable(address):
                self.updater.set_address(rdtype, address, address, why)

    def _unreachable(self, address: str) -> bool:
        """A CGNAT or private address is never published (nobody outside could reach it);
        logged once per address."""
        kind = not_public(address)
        if kind is None or self.provider == DnsProvider.ROUTE53_LAMBDA.value:
            # route53-lambda publishes the address its function sees, not this one.
            return False
        if address not in self._refused:
            self._refused.add(address)
            LOG.warning("dyndns: not publishing %s: it is %s, which cannot be reached from "
                        "outside (ask the operator for a public-IP APN)", address, kind)
        return True

    async def _relist(self, why: str) -> None:
        if self.lister is None:
            return
        try:
            listed = await asyncio.to_thread(self.lister)
        except OSError as e:
            LOG.warning("dyndns: cannot list the interfaces' addresses: %s", e)
            return
        self.book.reset(listed)
        self._refresh(why)

    def waiting_for(self) -> str:
        """Why a record has no address yet, in a few words."""
        if self.interface:
            return f"an address on {self.interface}"
        if self.chooser.network:
            return "the network part to choose an uplink with an address"
        return "an address on " + " or ".join(self.chooser.interfaces())

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
        if self._time_wait is not None:
            overall = "waiting for time"
        report_dyndns(self.status, overall, DyndnsReport(
            name=main["record"].split(" ")[0], provider=self.provider, record=main["record"],
            address=main["published"], published=main["published"],
            last_success=main["last_success"], last_confirmed=main["last_confirmed"],
            last_error=main["last_error"], next_retry=main["next_retry"],
            following=self.chooser.following(),
            # a fact a record lacks (nothing published yet) is left out, not null
            records=tuple({k: v for k, v in view.items() if v is not None} for view in views),
            waiting_for=self.waiting_for() if overall == "waiting" else
            f"time: {self._time_wait}" if self._time_wait is not None else None))

    async def _update_on_time(self) -> None:
        """The updater, once the clock can be trusted."""
        if self.time_gate.waiting:
            self._time_wait = self.time_gate.why
            self._report_now.set()
            await self.time_gate.wait()
            LOG.info("dyndns: the clock is good (%s); updating", self.time_gate.why)
            self._time_wait = None
            self._report_now.set()
        await self.updater.run()

    async def _pump_published(self) -> None:
        while True:
            self.on_published(await self._published.get())

    async def _pump_addresses(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            ev = await queue.get()
            if isinstance(ev, AddressChanged) and not self.on_address(ev):
                await self._relist(f"an address went away on {ev.interface}")

    async def _pump_active(self) -> None:
        while True:
            self.on_active(await self._active.get())

    async def _reporter(self) -> None:
        while True:
            self._report_now.clear()
            self.report()
            with contextlib.suppress(TimeoutError):
                await within(self._report_now.wait(), self.report_every)

    async def run(self) -> None:
        """Run until cancelled."""
        LOG.info("dyndns: keeping %s up to date via %s (following %s)",
                 ", ".join(str(s.record) for s in self.updater.states.values()), self.provider,
                 self.chooser.following())
        if self.monitor is not None:
            self.monitor.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            # Addresses present before we started send no event: list them (after the
            # monitor started, so nothing falls between the two).
            await self._relist("address present at start")
            queue = self.monitor.events if self.monitor is not None else self._addresses
            assert queue is not None  # one of the two is always set
            tasks = [asyncio.create_task(c, name=f"dyndns-{n}") for n, c in (
                ("updater", self._update_on_time()), ("published", self._pump_published()),
                ("addresses", self._pump_addresses(queue)), ("active", self._pump_active()),
                ("report", self._reporter()))]
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.monitor is not None:
                self.monitor.stop()


def build(cfg: Config, seams: Seams, http: HttpClient | None = None, *,
          state_path: Path | None = None, watch: bool = False) -> DyndnsPart:
    """The part with real providers for `cfg.dyndns`; its state file in `paths.state_dir`
    unless `state_path` says otherwise. `watch`: no network part runs, so read netlink
    itself."""
    from failberry.net.monitor import addresses
    from failberry.net.plan import uplinks
    from failberry.net.rtnl import IPRoute, NetlinkError

    d = cfg.dyndns
    timing = Timing(check_interval=d.check_interval, retry_initial=d.retry_initial,
                    retry_max=d.retry_max)
    updater = Updater(make_provider(d, http or RequestsClient()), make_verifier(d),
                      records(d), timing=timing)
    state = StateFile(state_path or Path(cfg.paths.state_dir) / STATE_FILE, d)

    def lister() -> list[AddressChanged]:
        try:
            with IPRoute() as nl:
                return addresses(nl)
        except NetlinkError as e:  # an OSError in all but name
            raise OSError(e.code, str(e)) from None

    monitor = None
    if watch:
        def links() -> list[tuple[int, str]]:
            with IPRoute() as nl:
                return [(m["index"], m.get_attr("IFLA_IFNAME")) for m in nl.get_links()]
        monitor = LinkMonitor(IPRoute, links)
    return DyndnsPart(updater, seams.status, seams.bus, provider=d.provider.value,
                      interface=d.interface, state=state, lister=lister,
                      uplinks=[(u.name, u.interface) for u in uplinks(cfg)],
                      network=not watch, monitor=monitor, time_gate=TimeGate(),
                      kept=seams.kept if isinstance(seams.kept, Kept) else None)
