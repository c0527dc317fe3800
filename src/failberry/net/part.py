"""The network part of the supervisor: link events and probe verdicts in; routes, rules,
firewall, conntrack and bus events out.

Every change goes through `_reconcile`: observe the links, ask the failover policy, compute
the plan, apply it (`failberry.net.kernel`, in the order that never lets LAN traffic leave
un-NATed), flush the flows NATed through the uplink we left, publish and report. Reconciling
every few seconds also repairs drift (a rule deleted by hand comes back). A failed apply (a
link that flapped since it was read, a gateway that is not on-link) is logged and retried
with a backoff; it never ends the part.

Fail closed: a part that crashes leaves routes, NAT and the firewall as they are, and the part
the supervisor builds in its place starts from them (nothing is removed at start), so the
uplinks stay closed throughout. A clean stop (cancel: SIGTERM, a reload) removes the routes,
rules, NAT and sysctl changes but leaves the filter chains, rewritten to let no LAN traffic out
to any uplink: the Pi stays closed from the uplinks while failberry is not running.
`failberry net clean` removes everything."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failberry.backoff import exponential
from failberry.bus import (
    ActiveUplinkChanged,
    Bus,
    ForceUplink,
    PublishedAddressChanged,
    Subscription,
)
from failberry.config import Config
from failberry.errors import FailberryError
from failberry.modem.follow import AUTO, follow, resolve_mobile
from failberry.net import kernel, readback
from failberry.net import plan as netplan
from failberry.net.apply_routes import RouteApplier
from failberry.net.failover import Failover, UplinkView
from failberry.net.inputs import RECONCILE_EVERY, Inputs
from failberry.net.monitor import LinkMonitor
from failberry.net.probes import HealthTracker, Thresholds, parse_target
from failberry.net.readback import Uplink
from failberry.net.seams import Routes, Seams
from failberry.net.sysctl import SysctlManager
from failberry.net.usage import HEALTH_KEY, Usage
from failberry.parts import Seams as PartSeams
from failberry.reports import DataUsage, NetworkReport
from failberry.status import Status, report_network

LOG = logging.getLogger(__name__)

RETRY_FIRST = 0.25  # a failed apply is tried again after this, doubling up to RECONCILE_EVERY
STATE_DIR = Path("/run/failberry")
USAGE_FILE = Path("/var/lib/failberry/mobile-usage.json")


@dataclass(frozen=True)
class Kept:
    """What a crashed network part hands the one built in its place."""

    mobile: str | None  # the interface `uplink.mobile.interface = "auto"` resolved to


class NetworkPart(Inputs):
    """Routes, NAT, firewall, link monitor, probes and failover."""

    name = "network"
    deadline = 3 * RECONCILE_EVERY

    def __init__(self, cfg: Config, status: Status, bus: Bus, seams: Seams, *,
                 state_dir: Path = STATE_DIR, usage_path: Path = USAGE_FILE) -> None:
        self.cfg = cfg
        self.status = status
        self.bus = bus
        self.s = seams
        self.state_dir = state_dir
        self.usage_path = usage_path
        self.routes: Routes = seams.routes or RouteApplier(seams.netlink)
        self.sysctls = SysctlManager(seams.sysctl, state_dir)
        self.failover = Failover(cfg.failover.hold_down)
        self.usage = Usage(usage_path, cfg.failover.cap_reset_day, cfg.failover.data_cap)
        self.uplinks: dict[str, Uplink] = {}
        f = cfg.failover
        for spec in netplan.uplinks(cfg):
            c = cfg.uplink.wired if spec.name == "wired" else cfg.uplink.mobile
            th = Thresholds(c.down, c.up, f.quorum, f.latency_threshold, f.loss_threshold)
            self.uplinks[spec.name] = Uplink(spec, [parse_target(t) for t in c.probe_targets],
                                              c.probe_interval, HealthTracker(th))
        self._lock = asyncio.Lock()
        self._published: str | None = None
        self._left: str | None = None  # the last uplink that carried the LAN
        self._over_cap = False
        self._recheck: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._failures = 0  # failed applies in a row
        self._apply_error: str | None = None
        self._applied_active: str | None = None  # the uplink table 2000 names, as last applied
        self._seen: set[str] = set()  # required interfaces seen since start
        self._missing: dict[str, str] = {}  # config key -> error, for required interfaces
        self._background: set[asyncio.Task[None]] = set()
        self._forwards: dict[str, dict[str, int]] = {}  # [[forward]] name -> its counters
        self._public = readback.PublicAddress()  # the mobile address as the outside sees it
        # One thread for every blocking netlink/iptables call, so they never run at once.
        # Made by `run`, which shuts it down on the way out.
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def handover(self) -> Kept:
        """What the part built after this one crashed starts from (besides the routes, NAT
        and firewall this one left in the kernel): the interface the modem's link is on."""
        mobile = self.cfg.uplink.mobile.interface
        return Kept(mobile if mobile != AUTO else None)

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._pool is not None, "only while running"
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run(self) -> None:
        """Run until cancelled. A clean stop (cancel) leaves the uplinks closed and removes the
        rest of what failberry added; a crash leaves everything in place (fail closed)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="net-apply")
        tasks: list[asyncio.Task[None]] = []
        forces: Subscription[ForceUplink] | None = None
        stopping = False
        try:
            # Nothing is removed at start: the apply diffs against what a crashed run left, so
            # the uplinks never stand open while the part restarts.
            self.s.monitor.start()
            await self._take_over()
            await self._reconcile("start")
            await self._drop_unnated()
            tasks = [asyncio.create_task(self._probe_loop(u), name=f"probe-{n}")
                     for n, u in self.uplinks.items()]
            forces = self.bus.subscribe(ForceUplink)
            tasks += [asyncio.create_task(self._events(), name="net-events"),
                      asyncio.create_task(self._periodic(), name="net-periodic"),
                      asyncio.create_task(self._forces(forces),
                                          name="net-forces"),
                      asyncio.create_task(follow(self.bus, self.cfg, self._follow_mobile),
                                          name="net-follow-mobile")]
            if "mobile" in self.uplinks and self.cfg.uplink.mobile.public_address_url:
                tasks.append(asyncio.create_task(self._public.run(
                    self.cfg.uplink.mobile.public_address_url, self.uplinks["mobile"],
                    self.s.clock), name="net-public"))
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            tasks += list(self._background)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if forces is not None:
                forces.close()
            for timer in (self._recheck, self._retry):
                if timer is not None:
                    timer.cancel()
            self.s.monitor.stop()
            await self._blocking(self._sample_usage)
            self.usage.maybe_persist(self.s.clock(), force=True)
            if stopping:
                await self._blocking(kernel.stop, self.cfg, self._over_cap, self.s.firewall,
                                     self.routes, self.sysctls)
            else:
                LOG.error("network part failed; routes, NAT and the firewall stay as they are "
                          "(the uplinks stay closed) until it runs again")
            self._pool.shutdown(wait=False)
            if self.s.close is not None:
                self.s.close()

    async def _take_over(self) -> None:
        """Start from the uplink a crashed run left active: its flows do not move, and the
        policy waits for that uplink's first probe round before it leaves it."""
        try:
            iface = await self._blocking(self.routes.active_interface)
        except FailberryError as e:
            LOG.warning("could not read the active route a previous run left: %s", e)
            return
        for name, up in self.uplinks.items():
            if iface is not None and up.spec.interface == iface:
                LOG.info("taking over from a previous run: %s (%s) is the active uplink", name,
                         iface)
                self.failover.active = name
                self._applied_active = name
                self._left = name

    async def _drop_unnated(self) -> None:
        # NAT exists now; LAN flows that went out before it keep their private source.
        try:
            await self.s.flusher.drop_unnated(self.cfg.lan.address)
        except Exception as e:  # noqa: BLE001  a failed clean-up must not stop the part
            LOG.warning("could not delete un-NATed LAN flows: %s", e)

    async def _reconcile(self, why: str) -> None:
        async with self._lock:
            await self._reconcile_locked(why)

    def _required(self) -> dict[str, str]:
        """Interfaces that must exist, by config key: the LAN and the wired uplink. Not the
        mobile one: it comes and goes with the modem."""
        out = {"lan.interface": self.cfg.lan.interface}
        if "wired" in self.uplinks:
            out["uplink.wired.interface"] = self.uplinks["wired"].spec.interface
        return {k: v for k, v in out.items() if v}

    def _check_interfaces(self, links: dict[str, netplan.LinkState]) -> None:
        """An ERROR line (and an entry in status `errors`) for a required interface that is
        missing: the LAN's whenever it is, the wired uplink's until it has been seen once (a
        wired link that goes away later is a failure the failover handles)."""
        missing: dict[str, str] = {}
        for key, name in self._required().items():
            if links[name].present:
                if key in self._missing:
                    LOG.info("%s: interface %s is there now", key, name)
                self._seen.add(name)
                continue
            if key != "lan.interface" and name in self._seen:
                continue
            missing[key] = f"{key}: interface {name} does not exist"
            if key not in self._missing:
                LOG.error("%s: interface %s does not exist; %s", key, name,
                          "the LAN is not served" if key == "lan.interface" else
                          "the wired uplink cannot carry traffic")
        self._missing = missing

    def _missing_names(self) -> set[str]:
        req = self._required()
        return {req[key] for key in self._missing}

    async def _reconcile_locked(self, why: str) -> None:
        now = self.s.clock()
        names = {u.spec.interface for u in self.uplinks.values()} | set(self._required().values())
        try:
            links = await self._blocking(self.routes.observe, sorted(names))
        except FailberryError as e:
            self._apply_failed(why, e)
            self._report(self.failover.active)
            return
        self._check_interfaces(links)
        views = {}
        for name, up in self.uplinks.items():
            up.link = links[up.spec.interface]
            if up.link.address:
                up.address = up.link.address
            if not up.link.usable and up.tracker.up is not False:
                what = ("does not exist" if up.spec.interface in self._missing_names() else
                        "is gone" if not up.link.present else
                        "has no carrier" if not up.link.carrier else "has no address")
                v = up.tracker.reset(f"{up.spec.interface} {what}")
                up.last = v
                self._publish_health(up, v)
            views[name] = UplinkView(up.spec.priority, up.link.usable, up.tracker.up)
        previous = self.failover.active
        decision = self.failover.decide(views, now, self.s.wall())
        self._over_cap = self.usage.over_cap()
        # The uplink the route still names, while a switch moves away from it.
        leaving = (self._applied_active if self._applied_active != decision.active else None)
        desired = netplan.plan(self.cfg, links, decision.active, self._over_cap, leaving)
        final = (netplan.plan(self.cfg, links, decision.active, self._over_cap).chains
                 if leaving is not None else None)
        if "mobile" in self.uplinks and leaving is None:
            await self._blocking(self._sample_usage)
        changes: list[str] = []
        try:
            await self._blocking(self._apply, desired, decision.active, final, changes)
        except (FailberryError, OSError) as e:
            self._apply_failed(why, e)
        else:
            self._apply_ok()
        finally:
            for change in changes:
                LOG.info("%s (%s)", change, why)
        if "mobile" in self.uplinks and leaving is not None:
            await self._blocking(self._sample_usage)
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
        self._spawn("hold-down over")

    def _spawn(self, why: str) -> None:
        # Keep a reference: the loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(self._reconcile(why))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _apply_failed(self, why: str, e: Exception) -> None:
        """Log it (every change of error, and at the 1st, 2nd, 4th, 8th... failure in a row)
        and try again after a doubling delay; the periodic check tries too."""
        self._failures += 1
        n = self._failures
        delay = exponential(n, RETRY_FIRST, RECONCILE_EVERY)
        text = str(e)
        level = logging.WARNING if text != self._apply_error or (n & (n - 1)) == 0 else \
            logging.DEBUG
        LOG.log(level, "could not apply the network plan (%s, attempt %d): %s; retrying in %gs",
                why, n, text, delay)
        self._apply_error = text
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(delay, self._spawn,
                                                            "retry after a failed apply")

    def _apply_ok(self) -> None:
        if self._failures:
            LOG.info("network plan applied after %d failed attempt(s)", self._failures)
        self._failures = 0
        self._apply_error = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _apply(self, desired: netplan.NetPlan, active: str | None,
               final: tuple[netplan.ChainSpec, ...] | None, changes: list[str]) -> None:
        """`kernel.apply` (in the part's thread); table 2000 names `active` once the routes
        are in."""
        def routed() -> None:
            self._applied_active = active

        kernel.apply(self.s.firewall, self.sysctls, self.routes, desired, final,
                     changes=changes, fast=self._failures == 0, routed=routed)

    def _report(self, active: str | None) -> None:
        ups = readback.uplink_reports(self.uplinks)
        healthy = active is not None and self.uplinks[active].tracker.up is True
        state = "ok" if healthy else ("degraded" if active else "down")
        devices = self.usage.totals()
        report_network(self.status, state, NetworkReport(
            active_uplink=active, uplinks=ups, events=tuple(self.failover.events),
            failovers_total=self.failover.switches,
            data=DataUsage(used_bytes=sum(devices.values()), cap_bytes=self.usage.cap,
                           devices=devices, capped=self._over_cap),
            health_check_bytes=self.usage.total(HEALTH_KEY),
            errors=tuple(self._missing.values()), apply_error=self._apply_error,
            forwards=self._forwards, public_address=self._public.value,
            forced=None if self.failover.forced is None
            else self.failover.forced.as_dict(self.s.clock())))

def build(cfg: Config, seams: PartSeams, state_dir: Path | None = None,
          usage_path: Path | None = None) -> NetworkPart:
    """The part with real seams: pyroute2, python-iptables, /proc/sys, conntrack, sockets.
    Its files go to `paths.run_dir` and `paths.state_dir` unless given."""
    from failberry.net.conntrack import NetlinkConntrack
    from failberry.net.firewall6 import dual_stack
    from failberry.net.prober import SocketProber
    from failberry.net.rtnl import IPRoute
    from failberry.net.sysctl import ProcSysctl

    kept = seams.kept
    if isinstance(kept, Kept) and kept.mobile and cfg.uplink.mobile.interface == AUTO:
        cfg = resolve_mobile(cfg, kept.mobile)  # where the modem's link was: follow on
    nl = IPRoute()

    def links() -> list[tuple[int, str]]:
        return [(m["index"], m.get_attr("IFLA_IFNAME")) for m in nl.get_links()]

    io = Seams(nl, dual_stack(cfg), ProcSysctl(), NetlinkConntrack(), SocketProber(),
               LinkMonitor(IPRoute, links), close=nl.close)
    return NetworkPart(cfg, seams.status, seams.bus, io,
                       state_dir=state_dir or Path(cfg.paths.run_dir),
                       usage_path=usage_path or Path(cfg.paths.state_dir) / USAGE_FILE.name)
