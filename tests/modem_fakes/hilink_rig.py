"""The HiLink rig: the fake stick's web API (fake_hilink.py) and dnsmasq in a "stick"
network namespace at 192.168.8.1, a veth whose other end is `eth1` in the test's "Pi"
namespace (the stick's USB Ethernet interface), and the real driver, machine and part with
the HiLink backend and runner (the API client's thread enters the Pi namespace; udhcpc runs
there). USB goes through the recording pyusb backend, reboots to a recorder."""

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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from conftest import remove_namespace
from failberry.bus import Bus
from failberry.config import ModemConfig
from failberry.modem.at import open_serial
from failberry.modem.dhcp import DhcpClient
from failberry.modem.driver import Driver, RebootLog
from failberry.modem.events import DeviceAdded, DeviceRemoved
from failberry.modem.hilink import HilinkApi, HilinkBackend, HilinkRunner
from failberry.modem.machine import Machine, Phase
from failberry.modem.part import ModemPart
from failberry.modem.usbpower import SysfsUsbPower
from failberry.status import Status
from modem_fakes.control import ctl
from modem_fakes.rig import FAKES, FAST, PING, RebootRecorder
from modem_fakes.usbfake import RecordingBackend, fake_sysfs

_COUNTER = itertools.count()


class OneStick:
    """Discovery of one HiLink stick, present from the start."""

    async def events(self) -> AsyncIterator[DeviceAdded | DeviceRemoved]:
        yield DeviceAdded("eth1", None, "1-1.2", "hilink", "eth1")
        await asyncio.Event().wait()


class HilinkRig:
    def __init__(self, tmp: Path, api_timeout: float = 1.0) -> None:
        self.tmp = tmp
        self.ns = f"fb-hl-{os.getpid()}-{next(_COUNTER)}"
        self.stick_ns = self.ns + "-stick"
        self.api_timeout = api_timeout
        self.procs: list[subprocess.Popen[bytes]] = []
        self.task: asyncio.Task[None] | None = None
        self.sysroot = fake_sysfs(tmp / "sys")
        self.backend = RecordingBackend()
        self.recorder = RebootRecorder()

    def sh(self, *argv: str) -> None:
        subprocess.run(argv, check=True)

    async def __aenter__(self) -> HilinkRig:
        self.sh("ip", "netns", "add", self.ns)
        self.sh("ip", "netns", "add", self.stick_ns)
        tag = f"fh{os.getpid() % 100000}{next(_COUNTER)}"
        self.sh("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        self.sh("ip", "link", "set", f"{tag}a", "netns", self.ns, "name", "eth1")
        self.sh("ip", "link", "set", f"{tag}b", "netns", self.stick_ns, "name", "lan0")
        self.sh("ip", "-n", self.stick_ns, "addr", "add", "192.168.8.1/24", "dev", "lan0")
        for ns, dev in ((self.stick_ns, "lan0"), (self.stick_ns, "lo"), (self.ns, "lo")):
            self.sh("ip", "-n", ns, "link", "set", dev, "up")
        inside = ["ip", "netns", "exec", self.stick_ns]
        self.procs.append(subprocess.Popen(
            [*inside, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
             "--no-resolv", "--no-ping", "--bind-interfaces", "--interface=lan0", "--user=root",
             "--dhcp-range=192.168.8.100,192.168.8.110,255.255.255.0,2m",
             "--dhcp-option=3,192.168.8.1", f"--dhcp-leasefile={self.tmp}/hl.leases",
             "--pid-file="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.procs.append(subprocess.Popen([*inside, sys.executable,
                                            str(FAKES / "fake_hilink.py"), str(self.tmp),
                                            "192.168.8.1"]))
        for _ in range(200):
            if (self.tmp / "hilink.ctl").exists():
                break
            await asyncio.sleep(0.02)
        cfg = ModemConfig(apn="internet")
        self.bus, self.status = Bus(), Status()
        self.api = HilinkApi(timeout=self.api_timeout, netns=self.ns)
        dhcp = DhcpClient(self.tmp / "dhcp", ["ip", "netns", "exec", self.ns, "udhcpc"])
        self.runner = HilinkRunner(self.api, dhcp, watch=0.3, misses=3)
        machine = Machine(FAST, has_pin=False, rand=random.Random(5).random, settle=1.0,
                          dial_timeout=15.0, step_timeout=15.0)
        self.driver = Driver(cfg, machine, status=self.status, bus=self.bus,
                             opener=open_serial, ppp=self.runner,
                             usb=SysfsUsbPower(self.sysroot, self.backend, off_time=0.05),
                             rebooter=self.recorder,
                             reboot_log=RebootLog(self.tmp / "reboots.json"),
                             poll_interval=0.5, at_timeout=1.0)
        self.driver.hilink = HilinkBackend(self.api, self.runner)
        self.part = ModemPart(self.driver, OneStick(), self.bus)
        self.task = asyncio.create_task(self.part.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.ctl(op="revive")  # a held request must not keep the API thread
        self.api.close()
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for ns in (self.ns, self.stick_ns):
            remove_namespace(ns)

    def ctl(self, **order: Any) -> Any:
        return ctl(self.tmp / "hilink.ctl", order)

    @property
    def phase(self) -> Phase:
        return self.driver.state.phase

    async def wait_for(self, what: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                s = self.driver.state
                raise AssertionError(f"timed out; modem {s.phase.value}: {s.reason}; "
                                     f"last error {s.last_error}")
            await asyncio.sleep(0.05)

    def ping(self, target: str = "192.168.8.1") -> bool:
        """One ping from the Pi namespace to the stick's router."""
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", PING,
                               target], capture_output=True).returncode == 0

    def address(self) -> str | None:
        out = subprocess.run(["ip", "-n", self.ns, "-j", "-4", "addr", "show", "dev", "eth1"],
                             capture_output=True, text=True)
        data = json.loads(out.stdout or "[]")
        for a in (data[0].get("addr_info", []) if data else []):
            return str(a["local"])
        return None
