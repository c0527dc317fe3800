"""The modem as a supervisor part: discovery, the driver, and the probes' verdicts wired
together; `from_config` builds it with the real seams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import replace
from pathlib import Path

from failberry.bus import Bus, UplinkHealth
from failberry.config import Config
from failberry.modem import events as ev
from failberry.modem.at import open_serial
from failberry.modem.discovery import Discovery, PathWatcher, UdevDiscovery
from failberry.modem.driver import Driver, RebootLog, SystemdReboot
from failberry.modem.machine import Machine, ModemState
from failberry.modem.ppp import PppRunner
from failberry.status import Status
from failberry.usbpower import SysfsUsbPower

LOG = logging.getLogger(__name__)

STATE_DIR = Path("/var/lib/failberry")
PPP_DIR = Path("/run/failberry/ppp")


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
        self._health_queue: asyncio.Queue[UplinkHealth] | None = None

    @classmethod
    def from_config(cls, cfg: Config, status: Status, bus: Bus) -> ModemPart:
        """The part with real seams: pyserial, pyudev, /usr/sbin/pppd, sysfs/pyusb, systemd."""
        machine = Machine(cfg.recovery, has_pin=cfg.modem.pin is not None,
                          rand=random.SystemRandom().random)
        driver = Driver(cfg.modem, machine, status=status, bus=bus, opener=open_serial,
                        ppp=PppRunner(cfg.modem, PPP_DIR, cfg.uplink.mobile.interface),
                        usb=SysfsUsbPower(), rebooter=SystemdReboot(),
                        reboot_log=RebootLog(STATE_DIR / "reboots.json"))
        discovery: Discovery = (UdevDiscovery(open_serial, cfg.modem.usb_ids)
                                if cfg.modem.device == "auto" else PathWatcher(cfg.modem.device))
        return cls(driver, discovery, bus)

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
        # A restarted part starts from scratch but keeps what must survive: the reboot
        # count and the fact that the PIN was rejected.
        d.state = replace(ModemState(), reboots=d.state.reboots,
                          pin_rejected=d.state.pin_rejected)
        if self._health_queue is None:  # once: the bus has no unsubscribe
            self._health_queue = self.bus.subscribe(UplinkHealth)
        queue = self._health_queue
        tasks = [asyncio.create_task(d.run(), name="modem-driver"),
                 asyncio.create_task(self._discover(), name="modem-discovery"),
                 asyncio.create_task(self._health(queue), name="modem-health")]
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
