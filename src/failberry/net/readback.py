"""What the network part reads back from the kernel and the outside, for its report: each
uplink's state, the mobile data counters, the `[[forward]]` counters and the mobile link's
address as the outside sees it (`failberry.net.part.NetworkPart` calls these)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from failberry.config import Config
from failberry.errors import FailberryError
from failberry.net import plan as netplan
from failberry.net.firewall import Firewall
from failberry.net.probes import HealthTracker, Verdict
from failberry.net.usage import HEALTH_KEY
from failberry.reports import UplinkReport

LOG = logging.getLogger(__name__)

PUBLIC_EVERY = 600.0  # how often uplink.mobile.public_address_url is asked
ASK_EVERY = 5.0  # how often the mobile link's address is looked at


@dataclass
class Uplink:
    """One uplink as the part follows it: its plan, probes, health and link state."""

    spec: netplan.UplinkSpec
    targets: list[Any]
    interval: float
    tracker: HealthTracker
    link: netplan.LinkState = field(default_factory=netplan.LinkState)
    last: Verdict | None = None
    address: str | None = None  # last address seen, kept after it goes (for the flush)


def uplink_reports(uplinks: Mapping[str, Uplink]) -> dict[str, UplinkReport]:
    """Each uplink's report from its link state and last probe verdict."""
    ups = {}
    for name, up in uplinks.items():
        v = up.last
        ups[name] = UplinkReport(
            up=up.tracker.up, reason=v.reason if v else "no probe yet",
            interface=up.spec.interface, carrier=up.link.carrier, address=up.link.address,
            gateway=netplan.next_hop(up.spec, up.link) if up.link.usable else None,
            rx_bytes=up.link.rx_bytes, tx_bytes=up.link.tx_bytes,
            latency_ms=None if v is None or v.latency_ms is None else round(v.latency_ms, 2),
            loss_pct=v.loss_pct if v else None, link=up.link.usable)
    return ups


def usage_counts(cfg: Config, firewall: Firewall, over_cap: bool) -> dict[str, int] | None:
    """Mobile bytes per LAN device (and the probes' own, `HEALTH_KEY`) from the filter
    counters; None when they cannot be read (counted at the next sample)."""
    keys = {**netplan.counter_keys(cfg, over_cap),
            HEALTH_KEY: (netplan.HEALTH_COUNTER,)}  # kept apart from the devices
    chains: dict[str, list[tuple[int, int]]] = {}
    counts: dict[str, int] = {}
    for dev, where in keys.items():
        total = 0
        for chain, idx in where:
            if chain not in chains:
                try:
                    chains[chain] = firewall.counters("filter", chain)
                except FailberryError as e:  # counted at the next sample
                    LOG.warning("could not read the data counters: %s", e)
                    return None
            rules = chains[chain]
            if idx < len(rules):
                total += rules[idx][1]
        counts[dev] = total
    return counts


def forward_counters(cfg: Config, firewall: Firewall) -> dict[str, dict[str, int]] | None:
    """Each `[[forward]]`'s packets and bytes in (to the LAN host) and out (its replies),
    from its rules in `fb-inbound`; None: no forwards, or the counters cannot be read."""
    from failberry.net import inbound

    where = inbound.forward_counters(cfg, netplan.uplinks(cfg))
    if not where:
        return None
    try:
        rules = firewall.counters("filter", inbound.CHAIN_FORWARDS)
    except FailberryError as e:  # counted at the next sample
        LOG.warning("could not read the port forward counters: %s", e)
        return None
    out: dict[str, dict[str, int]] = {}
    for name, places in where.items():
        c = out[name] = {"packets_in": 0, "bytes_in": 0, "packets_out": 0, "bytes_out": 0}
        for idx, direction in places:
            if idx < len(rules):
                c[f"packets_{direction}"] += rules[idx][0]
                c[f"bytes_{direction}"] += rules[idx][1]
    return out


class PublicAddress:
    """The mobile link's address as the outside sees it (`{"local": ..., "public": ...}`)."""

    def __init__(self) -> None:
        self.value: dict[str, str] | None = None

    async def run(self, url: str, up: Uplink, clock: Callable[[], float]) -> None:
        """Ask `url` over the mobile link when its address changes and every PUBLIC_EVERY
        seconds; a different answer is NAT (logged once per pair, shown in status)."""
        from failberry.net.publicaddr import PublicAddressError, fetch

        asked: str | None = None
        next_at = 0.0
        while True:
            local = up.link.address if up.link.usable else None
            if local is not None and (local != asked or clock() >= next_at):
                asked, next_at = local, clock() + PUBLIC_EVERY
                try:
                    seen = await asyncio.to_thread(fetch, url, local)
                except (PublicAddressError, ValueError) as e:
                    LOG.warning("could not learn the mobile link's public address: %s", e)
                else:
                    new = {"local": local, "public": seen}
                    if seen != local and new != self.value:
                        LOG.warning("the mobile link's address %s is seen outside as %s (the "
                                    "operator NATs it): inbound through it will not work; ask "
                                    "for a public-IP APN", local, seen)
                    self.value = new
            await asyncio.sleep(ASK_EVERY)
