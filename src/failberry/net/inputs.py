"""What wakes the network part's reconcile: link and address events from netlink, each
uplink's probe rounds, an admin's forced uplink, the modem's link moving to another interface,
and the periodic check that also samples the data and [[forward]] counters. `NetworkPart`
inherits these loops; each ends in `_reconcile`."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from failberry.bus import AddressChanged, Bus, ForceUplink, UplinkHealth
from failberry.config import Config
from failberry.modem.follow import resolve_mobile
from failberry.net import readback
from failberry.net.failover import Failover
from failberry.net.monitor import LinkChanged
from failberry.net.probes import Binding, Verdict
from failberry.net.readback import Uplink
from failberry.net.seams import Seams
from failberry.net.usage import Usage

LOG = logging.getLogger("failberry.net.part")  # the network part's lines, as before

RECONCILE_EVERY = 5.0
SAMPLE_EVERY = 10.0


class Inputs:
    """The part's input loops; `NetworkPart` provides the state and the reconcile."""

    cfg: Config
    bus: Bus
    s: Seams
    uplinks: dict[str, Uplink]
    failover: Failover
    usage: Usage
    _over_cap: bool
    _forwards: dict[str, dict[str, int]]

    async def _reconcile(self, why: str) -> None:
        raise NotImplementedError

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def _required(self) -> dict[str, str]:
        raise NotImplementedError

    async def _events(self) -> None:
        q = self.s.monitor.events
        while True:
            event = await q.get()
            # computed per burst: with `uplink.mobile.interface = "auto"` the mobile one moves
            watched = {u.spec.interface for u in self.uplinks.values()} | \
                set(self._required().values())
            relevant = False
            while True:  # take the whole burst; one reconcile for all of it
                if isinstance(event, AddressChanged):
                    self.bus.publish(event)  # dyndns follows addresses
                    relevant |= event.interface in watched
                elif isinstance(event, LinkChanged):
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

    async def _forces(self, q: asyncio.Queue[ForceUplink]) -> None:
        """An admin's forced failover/failback (SMS): the policy holds it, from this part's
        clock, while the uplink's link is usable; a reconcile when it runs out ends it."""
        while True:
            event = await q.get()
            self.failover.force(event.uplink, event.seconds, event.reason, self.s.clock())
            await self._reconcile(f"force: {event.reason}")

    async def _periodic(self) -> None:
        last_sample = self.s.clock()
        while True:
            await asyncio.sleep(RECONCILE_EVERY)
            now = self.s.clock()
            if now - last_sample >= SAMPLE_EVERY:
                last_sample = now
                await self._blocking(self._sample_usage)
                self.usage.maybe_persist(now)
            await self._blocking(self._sample_forwards)
            await self._reconcile("periodic check")

    async def _probe_loop(self, up: Uplink) -> None:
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

    def _publish_health(self, up: Uplink, v: Verdict) -> None:
        LOG.info("uplink %s %s: %s", up.spec.name, "up" if v.up else "down", v.reason)
        self.bus.publish(UplinkHealth(up.spec.name, bool(v.up), v.reason, v.latency_ms,
                                      v.loss_pct))

    def _sample_usage(self) -> None:
        if "mobile" not in self.uplinks:
            return
        counts = readback.usage_counts(self.cfg, self.s.firewall, self._over_cap)
        if counts is not None:
            self.usage.sample(counts, dt.date.fromtimestamp(self.s.wall()))

    def _sample_forwards(self) -> None:
        out = readback.forward_counters(self.cfg, self.s.firewall)
        if out is not None:
            self._forwards = out
