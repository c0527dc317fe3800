"""The network part of the supervisor: link events and probe verdicts in; routes, rules,
firewall, conntrack and bus events out.

Every change goes through `_reconcile`: observe the links, ask the failover policy, compute
the plan, apply it (routes first: the switch is one atomic `route replace`), flush the flows
NATed through the uplink we left, publish and report. Reconciling every few seconds also
repairs drift (a rule deleted by hand comes back)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failberry.bus import (
    ActiveUplinkChanged,
    AddressChanged,
    Bus,
    LinkChanged,
    PublishedAddressChanged,
    UplinkHealth,
)
from failberry.config import Config
from failberry.failover import Failover, UplinkView
from failberry.modem.follow import follow, resolve_mobile
from failberry.net import plan as netplan
from failberry.net.apply_routes import Netlink, RouteApplier
from failberry.net.conntrack import FlowFlusher
from failberry.net.firewall import Firewall
from failberry.net.monitor import LinkMonitor
from failberry.net.sysctl import Sysctl, SysctlManager
from failberry.net.usage import Usage
from failberry.probes import Binding, HealthTracker, Prober, Thresholds, Verdict, parse_target
from failberry.status import Status

LOG = logging.getLogger(__name__)

RECONCILE_EVERY = 5.0
SAMPLE_EVERY = 10.0
STATE_DIR = Path("/run/failberry")
USAGE_FILE = Path("/var/lib/failberry/mobile-usage.json")


@dataclass
class _Uplink:
    spec: netplan.UplinkSpec
    targets: list[Any]
    interval: float
    tracker: HealthTracker
    link: netplan.LinkState = field(default_factory=netplan.LinkState)
    last: Verdict | None = None
    address: str | None = None  # last address seen, kept after it goes (for the flush)


@dataclass(frozen=True)
class Seams:
    """Everything the part touches outside the process."""

    netlink: Netlink
    firewall: Firewall
    sysctl: Sysctl
    flusher: FlowFlusher
    prober: Prober
    monitor: LinkMonitor
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


class NetworkPart:
    """Routes, NAT, firewall, link monitor, probes and failover."""

    name = "network"
    deadline = 3 * RECONCILE_EVERY

    def __init__(self, cfg: Config, status: Status, bus: Bus, seams: Seams, *,
                 state_dir: Path = STATE_DIR, usage_path: Path = USAGE_FILE) -> None:
        self.cfg = cfg
        self.status = status
        self.bus = bus
        self.s = seams
        self.routes = RouteApplier(seams.netlink)
        self.sysctls = SysctlManager(seams.sysctl, state_dir)
        self.failover = Failover(cfg.failover.hold_down)
        self.usage = Usage(usage_path, cfg.failover.cap_reset_day, cfg.failover.data_cap)
        self.uplinks: dict[str, _Uplink] = {}
        f = cfg.failover
        for spec in netplan.uplinks(cfg):
            c = cfg.uplink.wired if spec.name == "wired" else cfg.uplink.mobile
            th = Thresholds(c.down, c.up, f.quorum, f.latency_threshold, f.loss_threshold)
            self.uplinks[spec.name] = _Uplink(spec, [parse_target(t) for t in c.probe_targets],
                                              c.probe_interval, HealthTracker(th))
        self._lock = asyncio.Lock()
        self._published: str | None = None
        self._left: str | None = None  # the last uplink that carried the LAN
        self._over_cap = False
        self._recheck: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        # One thread for every blocking netlink/iptables call, so they never run at once.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="net-apply")

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run(self) -> None:
        """Run until cancelled; removes everything it added on the way out."""
        self.status.register(self.name, self.deadline)
        await self._blocking(self._clean_sync)  # leftovers of a crashed run
        self.s.monitor.start()
        tasks = []
        try:
            await self._reconcile("start")
            await self._drop_unnated()
            tasks = [asyncio.create_task(self._probe_loop(u), name=f"probe-{n}")
                     for n, u in self.uplinks.items()]
            tasks += [asyncio.create_task(self._events(), name="net-events"),
                      asyncio.create_task(self._periodic(), name="net-periodic"),
                      asyncio.create_task(follow(self.bus, self.cfg, self._follow_mobile),
                                          name="net-follow-mobile")]
            await asyncio.gather(*tasks)
        finally:
            tasks += list(self._background)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._recheck is not None:
                self._recheck.cancel()
            self.s.monitor.stop()
            await self._blocking(self._sample_usage)
            self.usage.maybe_persist(self.s.clock(), force=True)
            await self._blocking(self._clean_sync)
            self._pool.shutdown()

    async def _drop_unnated(self) -> None:
        # NAT exists now; LAN flows that went out before it keep their private source.
        try:
            await self.s.flusher.drop_unnated(self.cfg.lan.address)
        except Exception as e:  # noqa: BLE001  a failed clean-up must not stop the part
            LOG.warning("could not delete un-NATed LAN flows: %s", e)

    def _clean_sync(self) -> None:
        for change in (self.routes.clean() + self.s.firewall.clean() + self.sysctls.restore()):
            LOG.info("clean: %s", change)

    async def _events(self) -> None:
        q = self.s.monitor.events
        while True:
            event = await q.get()
            watched = {u.spec.interface for u in self.uplinks.values()}  # "auto" may move
            relevant = False
            while True:  # take the whole burst; one reconcile for all of it
                if isinstance(event, LinkChanged | AddressChanged):
                    self.bus.publish(event)
                    relevant |= event.interface in watched
                else:
                    relevant = True
                if q.empty():
                    break
                event = q.get_nowait()
            if relevant:
                await self._reconcile("link event")

    async def _follow_mobile(self, interface: str) -> None:
        """Issue 16 hook: `uplink.mobile.interface = "auto"` and the modem's link is now on
        `interface`: plan with that name from now on (see failberry.modem.follow)."""
        self.cfg = resolve_mobile(self.cfg, interface)
        if "mobile" in self.uplinks:
            up = self.uplinks["mobile"]
            up.spec = dataclasses.replace(up.spec, interface=interface)
        await self._reconcile(f"mobile uplink is on {interface}")

    async def _periodic(self) -> None:
        last_sample = self.s.clock()
        while True:
            await asyncio.sleep(RECONCILE_EVERY)
            now = self.s.clock()
            if now - last_sample >= SAMPLE_EVERY:
                last_sample = now
                await self._blocking(self._sample_usage)
                self.usage.maybe_persist(now)
            await self._reconcile("periodic check")

    async def _probe_loop(self, up: _Uplink) -> None:
        while True:
            start = self.s.clock()
            link = up.link
            if link.usable and link.address is not None:
                binding = Binding(up.spec.interface, link.address)
                results = await self.s.prober.round(binding, up.targets,
                                                    up.tracker.timeout(up.interval))
                if up.link.address == link.address and up.link.usable:
                    verdict = up.tracker.feed(results)
                    up.last = verdict
                    if verdict.changed:
                        self._publish_health(up, verdict)
                        await self._reconcile(f"{up.spec.name} probes")
            await asyncio.sleep(max(0.0, start + up.interval - self.s.clock()))

    def _publish_health(self, up: _Uplink, v: Verdict) -> None:
        LOG.info("uplink %s %s: %s", up.spec.name, "up" if v.up else "down", v.reason)
        self.bus.publish(UplinkHealth(up.spec.name, bool(v.up), v.reason, v.latency_ms,
                                      v.loss_pct))

    def _sample_usage(self) -> None:
        if "mobile" not in self.uplinks:
            return
        keys = netplan.counter_keys(self.cfg, self._over_cap)
        chains: dict[str, list[tuple[int, int]]] = {}
        counts: dict[str, int] = {}
        for dev, where in keys.items():
            total = 0
            for chain, idx in where:
                if chain not in chains:
                    chains[chain] = self.s.firewall.counters("filter", chain)
                rules = chains[chain]
                if idx < len(rules):
                    total += rules[idx][1]
            counts[dev] = total
        self.usage.sample(counts, dt.date.fromtimestamp(self.s.wall()))

    async def _reconcile(self, why: str) -> None:
        async with self._lock:
            await self._reconcile_locked(why)

    async def _reconcile_locked(self, why: str) -> None:
        now = self.s.clock()
        links = await self._blocking(self.routes.observe,
                                     [u.spec.interface for u in self.uplinks.values()])
        views = {}
        for name, up in self.uplinks.items():
            up.link = links[up.spec.interface]
            if up.link.address:
                up.address = up.link.address
            if not up.link.usable and up.tracker.up is not False:
                what = ("is gone" if not up.link.present else
                        "has no carrier" if not up.link.carrier else "has no address")
                v = up.tracker.reset(f"{up.spec.interface} {what}")
                up.last = v
                self._publish_health(up, v)
            views[name] = UplinkView(up.spec.priority, up.link.usable, up.tracker.up)
        previous = self.failover.active
        decision = self.failover.decide(views, now, self.s.wall())
        self._over_cap = self.usage.over_cap()
        desired = netplan.plan(self.cfg, links, decision.active, self._over_cap)
        if "mobile" in self.uplinks:
            await self._blocking(self._sample_usage)
        changes = await self._blocking(self._apply, desired)
        for change in changes:
            LOG.info("%s (%s)", change, why)
        if decision.active is not None and self._left not in (None, decision.active):
            # Flows NATed through the uplink we left go only once another one carries the
            # LAN: with no uplink at all they may still resume where they were.
            old = self.uplinks[self._left]
            if old.address:
                try:
                    await self.s.flusher.flush_nat(old.address)
                except Exception as e:  # noqa: BLE001  a failed flush must not stop failover
                    LOG.warning("could not flush flows NATed to %s: %s", old.address, e)
        if decision.active is not None:
            self._left = decision.active
        if decision.changed:
            self.bus.publish(ActiveUplinkChanged(decision.active, previous, decision.reason))
        addr = links[self.uplinks[decision.active].spec.interface].address \
            if decision.active else None
        if addr != self._published:
            self._published = addr
            self.bus.publish(PublishedAddressChanged(addr, decision.active))
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if decision.recheck_in is not None:
            loop = asyncio.get_running_loop()
            self._recheck = loop.call_later(decision.recheck_in + 0.01, self._hold_down_over)
        self._report(decision.active)

    def _hold_down_over(self) -> None:
        # Keep a reference: the loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(self._reconcile("hold-down over"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _apply(self, desired: netplan.NetPlan) -> list[str]:
        changes = self.routes.apply(desired.routes, desired.rules)
        changes += self.sysctls.apply(desired.sysctls)
        changes += self.s.firewall.sync(desired.chains)
        return changes

    def _report(self, active: str | None) -> None:
        ups = {}
        for name, up in self.uplinks.items():
            v = up.last
            ups[name] = {"interface": up.spec.interface, "link": up.link.usable,
                         "carrier": up.link.carrier, "address": up.link.address,
                         "up": up.tracker.up, "reason": v.reason if v else "no probe yet",
                         "latency_ms": None if v is None or v.latency_ms is None
                         else round(v.latency_ms, 2),
                         "loss_pct": v.loss_pct if v else None}
        healthy = active is not None and self.uplinks[active].tracker.up is True
        state = "ok" if healthy else ("degraded" if active else "down")
        self.status.report(self.name, state, active_uplink=active, uplinks=ups,
                           events=[e.as_dict() for e in self.failover.events],
                           data_used=self.usage.totals(), data_cap=self.usage.cap,
                           over_cap=self._over_cap)


def build(cfg: Config, status: Status, bus: Bus, state_dir: Path | None = None,
          usage_path: Path | None = None) -> NetworkPart:
    """The part with real seams: pyroute2, python-iptables, /proc/sys, conntrack, sockets.
    Its files go to `paths.run_dir` and `paths.state_dir` unless given."""
    from pyroute2 import IPRoute

    from failberry.net.conntrack import NetlinkConntrack
    from failberry.net.firewall6 import dual_stack
    from failberry.net.sysctl import ProcSysctl
    from failberry.probes import SocketProber

    nl = IPRoute()

    def links() -> list[tuple[int, str]]:
        return [(m["index"], m.get_attr("IFLA_IFNAME")) for m in nl.get_links()]

    seams = Seams(nl, dual_stack(cfg), ProcSysctl(), NetlinkConntrack(), SocketProber(),
                  LinkMonitor(IPRoute, links))
    return NetworkPart(cfg, status, bus, seams, state_dir=state_dir or Path(cfg.paths.run_dir),
                       usage_path=usage_path or Path(cfg.paths.state_dir) / USAGE_FILE.name)
