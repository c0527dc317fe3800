"""The modem as a supervisor part: discovery, the driver, and the probes' verdicts wired
together; `build` makes it with the real seams."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from failberry.bus import Bus, UplinkHealth
from failberry.config import Config
from failberry.modem import events as ev
from failberry.modem.adapters import CommandReboot, RebootLog
from failberry.modem.at import open_serial
from failberry.modem.bearer import BearerRunner
from failberry.modem.datapath import DataRunner, Switch
from failberry.modem.dhcp import DhcpClient
from failberry.modem.discovery import Discovery, PathWatcher, UdevDiscovery, find_at_port
from failberry.modem.driver import Driver
from failberry.modem.hilink import HilinkApi, HilinkBackend, HilinkRunner
from failberry.modem.machine import Machine
from failberry.modem.ppp import PppRunner
from failberry.modem.usbpower import SysfsUsbPower
from failberry.parts import Seams

if TYPE_CHECKING:
    from failberry.modem.smsport import DriverSmsProvider

LOG = logging.getLogger(__name__)


def data_runner(cfg: Config) -> tuple[DataRunner, HilinkBackend]:
    """What carries data for `[modem] data`: pppd, the AT bearer with DHCP, the HiLink API
    with DHCP, or (auto) the one discovery picks for the stick found; and the HiLink backend
    that answers the machine for a stick without AT."""
    m = cfg.modem
    run_dir = Path(cfg.paths.run_dir)
    ifname = cfg.uplink.mobile.interface
    ppp = PppRunner(m, run_dir / "ppp", "ppp0" if ifname == "auto" else ifname,
                    argv=(m.pppd,))
    bearer = BearerRunner(m, DhcpClient(run_dir / "dhcp"))
    api = HilinkApi()
    hilink = HilinkRunner(api, DhcpClient(run_dir / "dhcp"))
    backend = HilinkBackend(api, hilink)
    if m.data == "ppp" or (m.data == "auto" and m.device != "auto"):
        return ppp, backend  # a configured device without `data` is the PPP port it was
    if m.data in ("ncm", "ecm"):
        return bearer, backend
    if m.data == "hilink":
        return hilink, backend
    return Switch({"ppp": ppp, "ncm": bearer, "ecm": bearer, "hilink": hilink}), backend


@dataclass(frozen=True)
class Kept:
    """What a crashed modem part hands the one built in its place: the reboots we asked for
    (the ladder's budget) and what became of the PIN entries (a wrong PIN is never sent
    again, an unsure one at most twice)."""

    reboots: tuple[float, ...]
    pin_rejected: bool
    pin_unsure: int


class ModemPart:
    """Keeps the mobile link up; reports as `modem`."""

    name = "modem"

    def __init__(self, driver: Driver, discovery: Discovery, bus: Bus,
                 uplink: str = "mobile") -> None:
        self.driver = driver
        self.discovery = discovery
        self.bus = bus
        self.uplink = uplink
        self.deadline = max(60.0, 3 * driver.poll_interval + 4 * driver.at_timeout)

    def handover(self) -> Kept:
        """What the part built after this one crashed must not forget."""
        st = self.driver.state
        return Kept(st.reboots, st.pin_rejected, st.pin_unsure)

    async def _discover(self) -> None:
        async for event in self.discovery.events():
            self.driver.post(event)

    async def _health(self, queue: asyncio.Queue[UplinkHealth]) -> None:
        while True:
            h = await queue.get()
            if h.uplink == self.uplink and not h.up:
                self.driver.post(ev.TrafficFailed(h.reason))

    async def run(self) -> None:
        """Run until cancelled; pppd is stopped on the way out."""
        d = self.driver
        with self.bus.subscribe(UplinkHealth) as health:  # closed when the part ends
            tasks = [asyncio.create_task(d.run(), name="modem-driver"),
                     asyncio.create_task(self._discover(), name="modem-discovery"),
                     asyncio.create_task(self._health(health), name="modem-health")]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()  # a crash propagates so the supervisor restarts the part
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t


def build(cfg: Config, seams: Seams, *, sms: DriverSmsProvider | None = None) -> ModemPart:
    """The part with real seams: pyserial, pyudev, `[modem] pppd`, sysfs/pyusb and
    `[recovery] reboot_command`; pppd's files under `[paths] run_dir`, the reboot log
    under `state_dir`. A test swaps the programs and directories through the config. `sms`:
    the SMS code's port, handed this part's driver."""
    m = cfg.modem
    machine = Machine(cfg.recovery, has_pin=m.pin is not None,
                      rand=random.SystemRandom().random)
    ppp, hilink = data_runner(cfg)
    driver = Driver(m, machine, status=seams.status, bus=seams.bus, opener=open_serial,
                    ppp=ppp, usb=SysfsUsbPower(),
                    rebooter=CommandReboot(cfg.recovery.reboot_command),
                    reboot_log=RebootLog(Path(cfg.paths.state_dir) / "reboots.json"))
    driver.hilink = hilink
    if isinstance(seams.kept, Kept):
        k = seams.kept
        driver.state = replace(driver.state, reboots=k.reboots, pin_rejected=k.pin_rejected,
                               pin_unsure=k.pin_unsure)
    if sms is not None:
        sms.attach(driver)
    at_port = m.at_port or None
    discovery: Discovery
    if m.device == "auto":
        discovery = UdevDiscovery(open_serial, m.usb_ids, at_port=at_port, data=m.data)
    elif m.data in ("ncm", "ecm"):  # bearer and monitoring on one AT port
        port = at_port or m.device
        discovery = PathWatcher(port, data_path=port, data=m.data)
    elif at_port:  # set up and monitor on at_port; PPP on the configured device
        discovery = PathWatcher(at_port, data_path=m.device)
    else:  # look for another AT port of the same stick in sysfs
        discovery = PathWatcher(m.device, data_path=m.device,
                                locate=functools.partial(find_at_port, opener=open_serial))
    return ModemPart(driver, discovery, seams.bus)
