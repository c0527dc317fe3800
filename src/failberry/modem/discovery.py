"""Finding the modem: by USB ids and interface numbers through pyudev (`device = "auto"`), or
by watching a configured path. The AT port is the one that answers `AT`; add and remove
events become DeviceAdded / DeviceRemoved for the machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from failberry.modem.at import AtChannel, SerialPort
from failberry.modem.errors import PortGone
from failberry.modem.events import DeviceAdded, DeviceRemoved

LOG = logging.getLogger(__name__)

DeviceEvent = DeviceAdded | DeviceRemoved

# Vendors whose USB sticks present serial AT ports. A stick still in its CD-ROM mode
# (ZTE 19d2:2000, Huawei 12d1:1446) has no tty and so is never a candidate here:
# usb-modeswitch switches it first.
MODEM_VENDORS = {"19d2": "ZTE", "12d1": "Huawei", "1e0e": "Qualcomm/SIMCom", "2c7c": "Quectel",
                 "1bc7": "Telit", "1199": "Sierra Wireless", "05c6": "Qualcomm",
                 "2001": "D-Link", "1c9e": "Longcheer"}
STORAGE_MODE_IDS = frozenset({"19d2:2000", "19d2:0166", "12d1:1446", "12d1:14fe"})


class Discovery(Protocol):
    """A source of modem add/remove events."""

    def events(self) -> AsyncIterator[DeviceEvent]:
        """Yield events until cancelled."""


@dataclass(frozen=True)
class Candidate:
    """A tty that belongs to a USB modem."""

    node: str  # /dev/ttyUSB2
    usb_path: str  # 1-1.2
    interface: int  # bInterfaceNumber
    usb_id: str  # 19d2:0031


def candidate(props: Mapping[str, str], usb_path: str,
              extra_ids: Iterable[str] = ()) -> Candidate | None:
    """A candidate from a tty's udev properties, or None if it is not a modem's port."""
    vid = props.get("ID_VENDOR_ID", "").lower()
    pid = props.get("ID_MODEL_ID", "").lower()
    usb_id = f"{vid}:{pid}"
    if vid not in MODEM_VENDORS and usb_id not in set(extra_ids):
        return None
    if usb_id in STORAGE_MODE_IDS:
        return None
    node = props.get("DEVNAME", "")
    try:
        number = int(props.get("ID_USB_INTERFACE_NUM", "ff"), 16)
    except ValueError:
        number = 0xFF
    return Candidate(node, usb_path, number, usb_id) if node else None


def choose_ports(answering: Sequence[Candidate]) -> tuple[Candidate, Candidate] | None:
    """(control, data) among the ports that answered AT: the lowest interface for control,
    the highest for PPP (ZTE and Huawei put the "Modem" port last), one port if only one."""
    if not answering:
        return None
    ordered = sorted(answering, key=lambda c: c.interface)
    return ordered[0], ordered[-1]


async def probe_port(node: str, opener: Callable[[str], SerialPort],
                     timeout: float = 1.0) -> bool:
    """Does `node` answer AT?"""
    try:
        port = opener(node)
    except (PortGone, OSError):
        return False
    channel = AtChannel(port, node, lambda _line: None)
    try:
        channel.start()
        for _ in range(2):
            if await channel.probe(timeout):
                return True
        return False
    finally:
        channel.close()


def usb_ttys(node: str, sysroot: Path = Path("/sys")) -> tuple[str | None, list[str]]:
    """The USB device `node` belongs to (its sysfs name, `1-1.2`) and the names of all its
    ttys in interface order, from sysfs; (None, []) when `node` is not a USB tty."""
    link = None
    for name in dict.fromkeys((os.path.basename(os.path.realpath(node)),
                               os.path.basename(node))):
        candidate_link = sysroot / "class" / "tty" / name / "device"
        if candidate_link.exists():
            link = candidate_link
            break
    if link is None:
        return None, []
    # usb-serial (option, qcserial): device -> .../1-1.2:1.2/ttyUSB2; cdc-acm: .../1-1.2:1.0
    target = link.resolve()
    interface = target if ":" in target.name else target.parent
    usb_device = interface.parent
    found: list[tuple[int, str]] = []
    for iface in usb_device.glob("*:*"):
        try:
            number = int(iface.name.rpartition(".")[2])  # 1-1.2:1.2 is interface 2
        except ValueError:
            continue
        for tty in [*iface.glob("ttyUSB*"), *iface.glob("tty/ttyACM*")]:
            found.append((number, tty.name))
    return usb_device.name, [name for _, name in sorted(found)]


async def find_at_port(device: str, opener: Callable[[str], SerialPort],
                       sysroot: Path = Path("/sys"), dev_dir: Path = Path("/dev")
                       ) -> tuple[str | None, str | None]:
    """For a configured data port: (another tty of the same stick that answers AT, the
    stick's USB name), either None when not found. The lowest answering interface wins."""
    usb_path, names = await asyncio.to_thread(usb_ttys, device, sysroot)
    data = os.path.realpath(device)
    for name in names:
        node = str(dev_dir / name)
        if os.path.realpath(node) == data:
            continue
        if await probe_port(node, opener):
            LOG.info("modem: %s answers AT; monitoring there while PPP runs on %s", node,
                     device)
            return node, usb_path
    return None, usb_path


Locate = Callable[[str], Awaitable[tuple[str | None, str | None]]]


class PathWatcher:
    """`[modem] device = "/dev/..."`: the path appearing, vanishing or changing device (a
    re-enumerated stick gets a new node) is the add/remove event. Polls once a `interval`."""

    def __init__(self, path: str, data_path: str | None = None, usb_path: str | None = None,
                 interval: float = 1.0, locate: Locate | None = None) -> None:
        self.path = path
        self.data_path = data_path
        self.usb_path = usb_path
        self.interval = interval
        self.locate = locate  # finds another AT port and the USB name when `path` appears

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_rdev

    async def events(self) -> AsyncIterator[DeviceEvent]:
        """Yield DeviceAdded/DeviceRemoved as the path comes and goes."""
        seen: tuple[int, int, int] | None = None
        while True:
            now = self._identity()
            if now != seen:
                if seen is not None:
                    yield DeviceRemoved(self.path)
                if now is not None:
                    control, usb_path = (await self.locate(self.path) if self.locate
                                         else (None, None))
                    yield DeviceAdded(control or self.path, self.data_path or self.path,
                                      usb_path or self.usb_path)
                seen = now
            await asyncio.sleep(self.interval)


class UdevDiscovery:
    """`[modem] device = "auto"`: pyudev enumeration, then its netlink monitor."""

    def __init__(self, opener: Callable[[str], SerialPort], extra_ids: Iterable[str] = (),
                 settle: float = 2.0, at_port: str | None = None) -> None:
        self.opener = opener
        self.extra_ids = tuple(extra_ids)
        self.settle = settle
        self.at_port = at_port  # `[modem] at_port`: the control/monitoring port, if set
        self.current: tuple[Candidate, Candidate] | None = None

    def scan(self, context: Any) -> list[Candidate]:
        """Every modem tty udev knows now."""
        out = []
        for dev in context.list_devices(subsystem="tty"):
            usb_dev = dev.find_parent("usb", "usb_device")
            if usb_dev is None:
                continue
            props = {k: str(dev.properties.get(k, "")) for k in
                     ("ID_VENDOR_ID", "ID_MODEL_ID", "DEVNAME", "ID_USB_INTERFACE_NUM")}
            c = candidate(props, usb_dev.sys_name, self.extra_ids)
            if c is not None:
                out.append(c)
        return out

    async def _find(self, context: Any) -> tuple[Candidate, Candidate] | None:
        answering = [c for c in self.scan(context) if await probe_port(c.node, self.opener)]
        return choose_ports(answering)

    async def events(self) -> AsyncIterator[DeviceEvent]:
        """Yield the modem found at start, then follow udev add/remove events."""
        import pyudev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        monitor.filter_by("tty")
        monitor.start()
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        pending: list[tuple[str, str]] = []

        def readable() -> None:
            while True:
                dev = monitor.poll(timeout=0)
                if dev is None:
                    break
                pending.append((dev.action or "", dev.device_node or ""))
                wake.set()

        loop.add_reader(monitor.fileno(), readable)
        try:
            found = await self._find(context)
            if found:
                self.current = found
                yield self._added(found)
            while True:
                await wake.wait()
                wake.clear()
                actions, pending[:] = list(pending), []
                if self.current and any(a == "remove" and n in (self.current[0].node,
                                                                 self.current[1].node)
                                        for a, n in actions):
                    yield DeviceRemoved(self.current[0].node)
                    self.current = None
                if self.current is None and any(a == "add" for a, _ in actions):
                    await asyncio.sleep(self.settle)  # a stick's ttys arrive one by one
                    found = await self._find(context)
                    if found:
                        self.current = found
                        yield self._added(found)
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(monitor.fileno())

    def _added(self, found: tuple[Candidate, Candidate]) -> DeviceAdded:
        control, data = found
        node = self.at_port or control.node
        if node == data.node:
            LOG.warning("modem %s: only %s answers AT; no monitoring while PPP runs (set "
                        "[modem] at_port if the stick has another AT port)", control.usb_id,
                        node)
        LOG.info("modem %s on %s: AT on %s, PPP on %s", control.usb_id, control.usb_path,
                 node, data.node)
        return DeviceAdded(node, data.node, control.usb_path)
