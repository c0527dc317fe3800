"""What the network part touches outside the process, as constructor arguments: netlink, the
firewall, /proc/sys, conntrack, the prober, the link monitor and the clocks. `build` in
`failberry.net.part` makes the real ones; a test makes fakes (tests/test_net_reconcile.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from failberry.net import plan as netplan
from failberry.net.apply_routes import Netlink
from failberry.net.conntrack import FlowFlusher
from failberry.net.firewall import Firewall
from failberry.net.monitor import LinkMonitor
from failberry.net.probes import Prober
from failberry.net.sysctl import Sysctl


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
    close: Callable[[], None] | None = None  # releases the netlink socket when the part ends
    routes: Routes | None = None  # the route applier; None: a RouteApplier on `netlink`



class Routes(Protocol):
    """What the part needs from the route applier (`RouteApplier`; a fake in unit tests)."""

    def observe(self, interfaces: Iterable[str]) -> dict[str, netplan.LinkState]: ...
    def active_interface(self) -> str | None: ...
    def apply(self, routes: Iterable[netplan.RouteSpec],
              rules: Iterable[netplan.RuleSpec]) -> list[str]: ...
    def clean(self) -> list[str]: ...
