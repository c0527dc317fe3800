"""Writing the network plan to the kernel, and taking it out again on a clean stop.

The apply order keeps LAN traffic from ever leaving un-NATed or meeting a stale REJECT: the nat
table, then the filter, then mangle, then sysctls (forwarding), then routes and rules. On a
switch the filter written first lets the LAN out through both the old and the new uplink, the
route moves (one atomic `route replace` in table 2000), then the filter is narrowed to the new
one. Both functions block (netlink, iptables): the network part runs them in its thread."""

from __future__ import annotations

import logging
from collections.abc import Callable

from failberry.config import Config
from failberry.errors import FailberryError
from failberry.net import plan as netplan
from failberry.net.apply_routes import ApplyError
from failberry.net.firewall import Firewall
from failberry.net.seams import Routes
from failberry.net.sysctl import SysctlManager

LOG = logging.getLogger("failberry.net.part")  # the network part's lines, as before


def apply(firewall: Firewall, sysctls: SysctlManager, routes: Routes, desired: netplan.NetPlan,
          final: tuple[netplan.ChainSpec, ...] | None, *, changes: list[str], fast: bool,
          routed: Callable[[], None]) -> None:
    """nat, filter, mangle, sysctls, then routes and rules: NAT and the filter exist before
    any route sends LAN traffic out. `final`: the filter once the route has moved (a
    switch); `desired` then lets the LAN out through both uplinks. `fast`: the last apply
    went through. `routed()` once the routes are in. Appends to `changes` as it goes, so a
    failure still reports what was done."""
    if final is not None and fast:
        # A switch after a good apply: NAT, mangle and sysctls do not depend on the active
        # uplink and are in place, so only the filter goes before the route moves (each
        # table read costs milliseconds of the switch); the rest is checked right after.
        changes += firewall.sync(desired.chains, ("filter",))
    else:
        changes += firewall.sync(desired.chains)
        changes += sysctls.apply(desired.sysctls)
    failed: ApplyError | None = None
    try:
        changes += routes.apply(desired.routes, desired.rules)
    except ApplyError as e:
        changes += e.changes
        if e.active_failed:
            raise  # the route still names the old uplink: keep the filter that allows it
        failed = e
    routed()
    if final is not None:
        changes += firewall.sync(final)
        changes += sysctls.apply(desired.sysctls)
    if failed is not None:
        raise failed


def stop(cfg: Config, over_cap: bool, firewall: Firewall, routes: Routes,
         sysctls: SysctlManager) -> None:
    """A clean stop: close the filter first (no LAN traffic out to any uplink, the uplinks
    closed as before), then remove routes and rules, restore sysctls, and only then remove
    NAT (if the filter could not be closed, NAT stays: nothing leaves un-NATed)."""
    closed = _step("close the filter", lambda: firewall.sync(
        netplan.closed(cfg, over_cap), ("filter",)))
    _step("remove routes and rules", routes.clean)
    _step("restore sysctls", sysctls.restore)
    if closed:
        _step("remove the nat and mangle chains", lambda: firewall.clean(("nat", "mangle")))


def _step(what: str, fn: Callable[[], list[str]]) -> bool:
    try:
        changes = fn()
    except (FailberryError, OSError) as e:
        LOG.error("stop: could not %s: %s", what, e)
        return False
    for change in changes:
        LOG.info("stop: %s", change)
    return True
