"""What the supervisor runs. Each area (modem, network, dynamic DNS) adds its part here, in its
own block; `failberry.supervisor` starts each part's `run()` as a task on the one loop and
cancels it on shutdown.

A part is any object with:
  name: str                      the key it reports under in the status snapshot
  deadline: float                seconds it may go without `status.report(name, ...)`;
                                 past that the watchdog stops pinging systemd
  async run() -> None            runs until cancelled; cleans up what it made on cancel
and may have:
  fresh() -> Part                a new object to run in its place after it crashed (the
                                 supervisor then never runs the crashed object again)
  release() -> None              close what outlives `run()` (bus subscriptions made in
                                 `__init__`); called once the part is stopped for good or
                                 replaced by `fresh()`. Whatever a part subscribed through
                                 its bus is closed anyway when the supervisor stops it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from failberry.bus import Bus
from failberry.config import Config
from failberry.status import Status

if TYPE_CHECKING:
    from failberry.alerts.at_session import AtSessionProvider


class Part(Protocol):
    """A long-running piece of the supervisor."""

    name: str
    deadline: float

    async def run(self) -> None:
        """Run until cancelled."""


def build_parts(cfg: Config, status: Status, bus: Bus, *,
                manage_network: bool = True) -> list[Part]:
    """The real parts for this config, with real I/O seams."""
    parts: list[Part] = []
    sms_provider: AtSessionProvider | None = None
    # -- network: routes, NAT, firewall, link monitor, probes, failover --
    # The network part rewrites the routes, rules, iptables and sysctls of the namespace it
    # runs in. That is the job on the Pi; `failberry run --no-network` (a workstation, the
    # tests' root namespace) leaves them alone.
    if manage_network:
        from failberry.net.part import build as build_network

        parts.append(build_network(cfg, status, bus))
    # -- end network --
    # -- modem: AT layer, state machine, pppd, recovery ladder --
    # `modem.enabled = false`: something else brings the mobile interface up; no modem part,
    # and the status says so (a report without a deadline: nothing runs to keep it current).
    if cfg.modem.enabled:
        from failberry.modem.part import ModemPart
        modem = ModemPart.from_config(cfg, status, bus)
        parts.append(modem)
        a = cfg.alerts
        if (a.sms_to or a.sms_commands_from) and not a.sms_port:
            # SMS through the modem part's own AT port (the monitoring port while pppd
            # holds the data port), taking turns with its polling.
            from failberry.modem.smsport import DriverSmsProvider
            sms_provider = DriverSmsProvider(modem.driver)
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
        from failberry.dyndns.part import DyndnsPart
        # Without a network part nobody publishes addresses on the bus: it reads netlink itself.
        parts.append(DyndnsPart.from_config(cfg, status, bus, watch=not manage_network))
    # -- end dynamic DNS --
    # -- the Pi's own health: under-voltage, temperature, SD card --
    from failberry.pihealth.part import PiHealthPart
    parts.append(PiHealthPart.from_config(cfg, status, bus))
    # -- end Pi health --
    # -- alerts: SMS, webhooks, hook scripts. SMS goes through alerts.sms_port if set,
    # else through the modem part's AT port (`sms_provider`). --
    from failberry.alerts.build import build as build_alerts
    parts.append(build_alerts(cfg, status, bus, provider=sms_provider))
    # -- end alerts --
    return parts
