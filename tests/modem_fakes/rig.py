"""The end-to-end rig: the fake ZTE modem (a subprocess on ptys), the real AT layer, machine,
driver and part, the stand-in pppd inside a network namespace made for the test, USB through
the recording pyusb backend, and a reboot recorder."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import remove_namespace
from failberry.bus import Bus, ModemStateChanged
from failberry.config import ModemConfig, RecoveryConfig, Secret
from failberry.modem.adapters import Rebooter
from failberry.modem.at import SerialPort, open_serial
from failberry.modem.bearer import BearerRunner
from failberry.modem.datapath import DataRunner
from failberry.modem.dhcp import DhcpClient
from failberry.modem.discovery import PathWatcher
from failberry.modem.driver import Driver, RebootLog
from failberry.modem.machine import Machine, Phase
from failberry.modem.part import ModemPart
from failberry.modem.ppp import PppRunner
from failberry.modem.usbpower import SysfsUsbPower
from failberry.status import Status
from modem_fakes.control import ctl
from modem_fakes.usbfake import RecordingBackend, fake_sysfs

FAKES = Path(__file__).resolve().parent
_COUNTER = itertools.count()

# One ICMP echo over a raw socket, answered within 1 s: exit 0 (no ping(8) on the machine).
PING = """
import os, select, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
body = struct.pack("!BBHHH", 8, 0, 0, os.getpid() & 0xFFFF, 1) + b"failberry"
total = sum(struct.unpack("!%dH" % (len(body) // 2), body[: len(body) // 2 * 2]))
total += body[-1] << 8 if len(body) % 2 else 0
total = (total >> 16) + (total & 0xFFFF)
csum = ~(total + (total >> 16)) & 0xFFFF
s.sendto(body[:2] + struct.pack("!H", csum) + body[4:], (sys.argv[1], 0))
while select.select([s], [], [], 1.0)[0]:
    data, addr = s.recvfrom(1500)
    if addr[0] == sys.argv[1] and data[20] == 0:
        sys.exit(0)
sys.exit(1)
"""

FAST = RecoveryConfig(registration_timeout=2.0, redial_limit=1, modem_reset_limit=1,
                      usb_rebind_limit=1, port_power_limit=1, reboots_per_day=1,
                      backoff_initial=0.05, backoff_max=0.2, stable_after=600.0)


class RebootRecorder:
    """The reboot seam: remembers the request instead of rebooting."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def reboot(self, reason: str) -> None:
        self.reasons.append(reason)


class CpuWatch:
    """Process CPU time over a window: a spinning loop would use about all of the wall."""

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.monotonic()

    def used(self) -> tuple[float, float]:
        return time.process_time() - self.cpu, time.monotonic() - self.wall

    def assert_low(self, ratio: float = 0.25, slack: float = 0.5) -> None:
        cpu, wall = self.used()
        assert cpu <= ratio * wall + slack, f"{cpu:.2f}s CPU in {wall:.2f}s: spinning"


class Rig:
    """Everything for one end-to-end run; `async with Rig(...) as rig:`."""

    def __init__(self, tmp: Path, scenario: dict[str, Any] | None = None, *,
                 pin: str | None = None, recovery: RecoveryConfig = FAST,
                 at_timeout: float = 1.0, poll_interval: float = 0.5,
                 ganged: bool = False, start_part: bool = True,
                 opener: Callable[[str], SerialPort] = open_serial,
                 rebooter: Rebooter | None = None, step_timeout: float = 15.0,
                 single_port: bool = False, machine_opts: dict[str, Any] | None = None,
                 bearer: str | None = None) -> None:
        self.bearer = bearer  # "huawei", "zte", "generic": the ncm/ecm path over a veth
        self.machine_opts = machine_opts or {}
        self.start_part = start_part
        self.opener = opener
        self.step_timeout = step_timeout
        self.single_port = single_port
        self.tmp = tmp
        self.dev = tmp / "dev"
        self.dev.mkdir()
        self.scenario = scenario or {}
        self.ns = f"fb-modem-{os.getpid()}-{next(_COUNTER)}"
        self.cfg = ModemConfig(apn="internet", pin=Secret(pin) if pin else None)
        self.backend = RecordingBackend(ganged=ganged)
        self.sysroot = fake_sysfs(tmp / "sys")
        self.recorder = RebootRecorder()
        self.rebooter: Rebooter = rebooter or self.recorder
        self.recovery = recovery
        self.at_timeout = at_timeout
        self.poll_interval = poll_interval
        self.modem: subprocess.Popen[bytes] | None = None
        self.task: asyncio.Task[None] | None = None
        self.history: list[ModemStateChanged] = []

    # -- lifecycle

    async def __aenter__(self) -> Rig:
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        if self.bearer:
            self._make_isp()
        self.modem = subprocess.Popen([sys.executable, str(FAKES / "fake_modem.py"),
                                       str(self.dev), json.dumps(self.scenario)])
        for _ in range(200):
            if (self.dev / "ctl").exists() and (self.dev / "ttyUSB1").exists():
                break
            await asyncio.sleep(0.02)
        self.bus = Bus()
        self.status = Status()
        self.machine = Machine(self.recovery, has_pin=self.cfg.pin is not None,
                               rand=random.Random(5).random, settle=3.0, dial_timeout=15.0,
                               **{"step_timeout": self.step_timeout, **self.machine_opts})
        ppp_argv = ["ip", "netns", "exec", self.ns, sys.executable,
                    str(FAKES / "fake_pppd.py"), "--control", str(self.tmp)]
        runner: DataRunner = PppRunner(self.cfg, self.tmp / "ppp", argv=ppp_argv,
                                       stop_grace=3.0)
        if self.bearer:
            dhcp = DhcpClient(self.tmp / "dhcp", ["ip", "netns", "exec", self.ns, "udhcpc"])
            runner = BearerRunner(self.cfg, dhcp, at_timeout=self.at_timeout)
        self.driver = Driver(
            self.cfg, self.machine, status=self.status, bus=self.bus, opener=self.opener,
            ppp=runner,
            usb=SysfsUsbPower(self.sysroot, self.backend, off_time=0.05),
            rebooter=self.rebooter, reboot_log=RebootLog(self.tmp / "reboots.json"),
            poll_interval=self.poll_interval, at_timeout=self.at_timeout)
        data = self.dev / "ttyUSB2"
        control = str(data if self.single_port else self.dev / "ttyUSB1")
        discovery = PathWatcher(control, control if self.bearer else str(data),
                                usb_path="1-1.2", interval=0.2,
                                data="ncm" if self.bearer else "ppp",
                                net="wwan0" if self.bearer else None)
        self.part = ModemPart(self.driver, discovery, self.bus)
        changes = self.bus.subscribe(ModemStateChanged)

        async def record() -> None:
            while True:
                self.history.append(await changes.get())

        self._recorder = asyncio.create_task(record())
        if self.start_part:
            self.task = asyncio.create_task(self.part.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            for task in (self.task, self._recorder):
                if task is not None:
                    task.cancel()
                    await self._finish(task)
        finally:
            self._remove()

    def _remove(self) -> None:
        """The fake modem, and the namespaces with anything still running in them."""
        if self.modem is not None:
            self.modem.send_signal(signal.SIGTERM)
            try:
                self.modem.wait(10)
            except subprocess.TimeoutExpired:
                self.modem.kill()
                self.modem.wait(10)
        # pppd stand-ins are stopped by the part; anything left in the namespace dies here
        for ns in (self.ns, self.isp) if self.bearer else (self.ns,):
            remove_namespace(ns)

    @staticmethod
    async def _finish(task: asyncio.Task[None], limit: float = 20.0) -> None:
        """Wait for a cancelled task; one that does not end within `limit` is a defect in the
        part's stop: fail saying where every task of the loop is stuck, not as a bare timeout
        of the whole test."""
        done, _ = await asyncio.wait([task], timeout=limit)
        if done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
            return
        stacks = []
        for t in asyncio.all_tasks():
            frames = t.get_stack()
            where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
            stacks.append(f"{t.get_name()}: {where}")
        raise AssertionError(f"{task.get_name()} did not stop within {limit:g}s of its "
                             "cancellation; tasks:\n" + "\n".join(stacks))

    def _make_isp(self) -> None:
        """The stick's Ethernet side: wwan0 in the Pi namespace, isp0 in the ISP one."""
        self.isp = self.ns + "-isp"
        subprocess.run(["ip", "netns", "add", self.isp], check=True)
        tag = f"fb{os.getpid() % 100000}{next(_COUNTER)}"
        subprocess.run(["ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name",
                        f"{tag}b"], check=True)
        subprocess.run(["ip", "link", "set", f"{tag}a", "netns", self.ns, "name", "wwan0"],
                       check=True)
        subprocess.run(["ip", "link", "set", f"{tag}b", "netns", self.isp, "name", "isp0"],
                       check=True)
        for ns, dev in ((self.isp, "isp0"), (self.isp, "lo"), (self.ns, "lo")):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        self.scenario = {"maker": {"huawei": "huawei", "zte": "ZTE CORPORATION"}.get(
            self.bearer or "", "Quectel"), "model": "E3372", **self.scenario,
            "bearer": {"ns": self.isp, "if": "isp0", "gw": "10.99.0.1/24",
                       "range": "10.99.0.50,10.99.0.60", "dir": str(self.tmp),
                       "vendor": self.bearer}}

    def address(self, dev: str = "wwan0") -> str | None:
        """The IPv4 address on `dev` in the Pi namespace."""
        out = subprocess.run(["ip", "-n", self.ns, "-j", "-4", "addr", "show", "dev", dev],
                             capture_output=True, text=True)
        data = json.loads(out.stdout or "[]")
        for a in (data[0].get("addr_info", []) if data else []):
            return str(a["local"])
        return None

    def routes(self) -> str:
        """`ip route` in the Pi namespace."""
        return subprocess.run(["ip", "-n", self.ns, "route"], capture_output=True,
                              text=True).stdout

    def channel_open(self) -> bool:
        """Is the driver's AT channel open?"""
        return self.driver.channel is not None

    def ping(self, target: str = "10.99.0.1") -> bool:
        """One ping from the Pi namespace (a probe through the mobile uplink)."""
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", PING,
                               target], capture_output=True).returncode == 0

    # -- helpers

    def ctl(self, **order: Any) -> Any:
        return ctl(self.dev / "ctl", order)

    @property
    def phase(self) -> Phase:
        return self.driver.state.phase

    async def wait_for(self, what: Any, timeout: float = 20.0, step: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; modem {self.phase.value}: "
                                     f"{self.driver.state.reason}; last error "
                                     f"{self.driver.state.last_error}")
            await asyncio.sleep(step)

    async def wait_phase(self, phase: Phase, timeout: float = 20.0) -> None:
        await self.wait_for(lambda: self.phase is phase, timeout)

    def ppp0(self) -> dict[str, Any] | None:
        out = subprocess.run(["ip", "-n", self.ns, "-j", "addr", "show", "dev", "ppp0"],
                             capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        data: list[dict[str, Any]] = json.loads(out.stdout)
        return data[0] if data else None

    def ppp0_address(self) -> str | None:
        link = self.ppp0()
        if link is None or "UP" not in link.get("flags", []):
            return None
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                return str(a["local"])
        return None

    def order_pppd_exit(self, status: int) -> None:
        (self.tmp / "pppd-exit").write_text(f"{status}\n")
