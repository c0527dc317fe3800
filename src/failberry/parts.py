"""What the supervisor runs. Each area (network, modem, dynamic DNS, Pi health, alerts) adds
its recipe here, in its own block; `failberry.supervisor` builds each part from its recipe,
runs its `run()` as a task on the one loop, builds a fresh object from the same recipe when
one crashes, and cancels it on shutdown.

Every part module has `build(cfg, seams) -> Part`; `seams` (`Seams`) is what the supervisor
hands each object it builds: the status to report to, its own view of the bus, and `kept`,
what the object it replaces handed over. A part is any object with:
  name: str                      the key it reports under in the status snapshot
  deadline: float                seconds it may go without reporting; past that the watchdog
                                 stops pinging systemd (the supervisor registers it)
  async run() -> None            runs until cancelled; cleans up what it made on cancel
and may have:
  handover() -> object           the state that must survive a restart (a modem's reboot
                                 count, a rejected PIN...): the next object's `seams.kept`.

Bus subscriptions live as long as the object that made them: the supervisor closes what a part
subscribed through its view of the bus when the part is stopped for good, and hands the open
queues (with the events that arrived during the restart's backoff) to the fresh object that
replaces a crashed one (`Bus.hand_over`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from failberry.bus import Bus
from failberry.config import Config
from failberry.status import Status

if TYPE_CHECKING:
    from failberry.modem.smsport import DriverSmsProvider


class Part(Protocol):
    """A long-running piece of the supervisor."""

    name: str
    deadline: float

    async def run(self) -> None:
        """Run until cancelled."""


@dataclass(frozen=True)
class Seams:
    """What the supervisor hands every part it builds."""

    status: Status
    bus: Bus  # the part's own view: what it subscribes through it ends with it
    kept: object = None  # the crashed predecessor's `handover()`; None on a first build


@dataclass(frozen=True)
class Recipe:
    """How to build one part: `build(seams)`, the first time and after every crash."""

    name: str
    build: Callable[[Seams], Part]


def build_parts(cfg: Config, status: Status, bus: Bus, *,
                manage_network: bool = True) -> list[Recipe]:
    """The recipes of the real parts for this config, with real I/O seams. `bus` is unused:
    each part gets its own view of the supervisor's bus through its `Seams`."""
    recipes: list[Recipe] = []
    sms_port: DriverSmsProvider | None = None
    # -- network: routes, NAT, firewall, link monitor, probes, failover --
    # The network part rewrites the routes, rules, iptables and sysctls of the namespace it
    # runs in. That is the job on the Pi; `failberry run --no-network` (a workstation, the
    # tests' root namespace) leaves them alone.
    if manage_network:
        from failberry.net.part import build as build_network

        recipes.append(Recipe("network", lambda s: build_network(cfg, s)))
    # -- end network --
    # -- modem: AT layer, state machine, pppd, recovery ladder --
    # `modem.enabled = false`: something else brings the mobile interface up; no modem part,
    # and the status says so (a report without a deadline: nothing runs to keep it current).
    if cfg.modem.enabled:
        from failberry.modem.part import build as build_modem

        a = cfg.alerts
        if (a.sms_to or a.sms_commands_from) and not a.sms_port:
            # SMS through the modem part's own AT port (the monitoring port while pppd
            # holds the data port), taking turns with its polling; every modem part built
            # hands its driver to the one SMS port.
            from failberry.modem.smsport import DriverSmsProvider
            sms_port = DriverSmsProvider()
        sms = sms_port
        recipes.append(Recipe("modem", lambda s: build_modem(cfg, s, sms=sms)))
    else:
        from failberry.status import ModemReport, report_modem
        report_modem(status, "not managed", ModemReport(
            interface=cfg.uplink.mobile.interface,
            reason="modem.enabled = false: the mobile interface is brought up by something "
                   "else"))
    # -- end modem --
    # -- dynamic DNS --
    from failberry.config import DnsProvider
    if cfg.dyndns.provider is not DnsProvider.NONE:
        from failberry.dyndns.part import build as build_dyndns

        # Without a network part nobody publishes addresses on the bus: it reads netlink itself.
        recipes.append(Recipe("dyndns", lambda s: build_dyndns(cfg, s,
                                                               watch=not manage_network)))
    # -- end dynamic DNS --
    # -- the Pi's own health: under-voltage, temperature, SD card --
    from failberry.pihealth.part import build as build_pihealth
    recipes.append(Recipe("pihealth", lambda s: build_pihealth(cfg, s)))
    # -- end Pi health --
    # -- alerts: SMS, webhooks, hook scripts. SMS goes through alerts.sms_port if set,
    # else through the modem part's AT port (`sms_port`). --
    from failberry.alerts.build import build as build_alerts
    recipes.append(Recipe("alerts", lambda s: build_alerts(cfg, s, provider=sms_port)))
    # -- end alerts --
    return recipes


def build_first(cfg: Config, status: Status, bus: Bus, *,
                manage_network: bool = True) -> list[Part]:
    """The first object of each real part, all on `bus` (what the supervisor builds first,
    for a test to look at)."""
    return [r.build(Seams(status, bus))
            for r in build_parts(cfg, status, bus, manage_network=manage_network)]


def part_modules(cfg: Config, *, manage_network: bool = True) -> list[str]:
    """What building this config's real parts imports, one name each: the supervisor imports
    them one at a time before it builds the parts, answering /health in between (on a Pi
    they take seconds, and an import cannot yield). The lighter ones come first, so the
    first gap comes early; pyroute2's IPRoute (failberry.net.rtnl: 1-2 s in QEMU) last.
    A module that fails to import there fails again, with the part's own error, in its
    build."""
    from failberry.config import DnsProvider

    names = ["failberry.pihealth.part"]
    if cfg.modem.enabled:
        names += ["serial", "pyudev", "usb.core"]
    names += ["requests", "failberry.alerts.build"]
    if cfg.dyndns.provider is not DnsProvider.NONE:
        names += ["dns.resolver", "dns.update", "failberry.dyndns.part"]
    if cfg.modem.enabled:
        names += ["failberry.modem.part"]
    if manage_network:
        names += ["failberry.net.iptclib", "failberry.net.rtnl", "failberry.net.part"]
    return names
