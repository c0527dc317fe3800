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
from failberry.modem.datapath import DataPath, Stick, plan, read_stick, usb_id_of
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


async def stick_event(stick: Stick, data: str, answers: Callable[[str], Awaitable[bool]],
                      dev_dir: Path = Path("/dev"), at_port: str | None = None
                      ) -> DeviceAdded | None:
    """The DeviceAdded for `stick` driven by `data` ("auto" or a path): its ttys are asked
    (`answers(node)`) which take AT. PPP keeps the lowest answering port for control and the
    highest for data; NCM/ECM run bearer and monitoring on the lowest; HiLink has no port
    (its network interface stands for it). None when the stick offers no usable path."""
    found = plan(stick, data)
    if found is None:
        if stick.storage_only:
            LOG.info("modem %s on %s: still in CD-ROM mode (usb-modeswitch switches it)",
                     stick.usb_id, stick.usb_path)
        return None
    if found.path is DataPath.HILINK:
        assert found.net is not None
        LOG.info("modem %s on %s: %s", stick.usb_id, stick.usb_path, found.describe())
        return DeviceAdded(found.net, None, stick.usb_path, found.path.value, found.net)
    nodes = [str(dev_dir / t) for t in found.ttys]
    answering = [n for n in nodes if await answers(n)]
    if not answering:
        LOG.info("modem %s on %s: no port answers AT", stick.usb_id, stick.usb_path)
        return None
    control = at_port or answering[0]
    data_port = answering[-1] if found.path is DataPath.PPP else control
    LOG.info("modem %s on %s: %s; AT on %s, data on %s", stick.usb_id, stick.usb_path,
             found.path.value, control, found.net or data_port)
    return DeviceAdded(control, data_port, stick.usb_path, found.path.value, found.net)


Locate = Callable[[str], Awaitable[tuple[str | None, str | None]]]


class PathWatcher:
    """`[modem] device = "/dev/..."`: the path appearing, vanishing or changing device (a
    re-enumerated stick gets a new node) is the add/remove event. Polls once a `interval`."""

    def __init__(self, path: str, data_path: str | None = None, usb_path: str | None = None,
                 interval: float = 1.0, locate: Locate | None = None, *, data: str = "ppp",
                 net: str | None = None) -> None:
        self.path = path
        self.data = data  # the data path and network interface DeviceAdded carries
        self.net = net
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
                                      usb_path or self.usb_path, self.data, self.net)
                seen = now
            await asyncio.sleep(self.interval)


class UdevDiscovery:
    """`[modem] device = "auto"`: pyudev enumeration, then its netlink monitor. A stick is
    any USB device of a modem vendor (or `usb_ids`) with a tty or a network interface; what
    it presents decides the data path unless `data` names one."""

    def __init__(self, opener: Callable[[str], SerialPort], extra_ids: Iterable[str] = (),
                 settle: float = 2.0, at_port: str | None = None, *, data: str = "auto",
                 dev_dir: Path = Path("/dev")) -> None:
        self.opener = opener
        self.dev_dir = dev_dir
        self.extra_ids = tuple(extra_ids)
        self.settle = settle
        self.at_port = at_port  # `[modem] at_port`: the control/monitoring port, if set
        self.data = data
        self.current: DeviceAdded | None = None

    def scan(self, context: Any) -> list[Path]:
        """The sysfs directories of every USB device of a modem vendor (or `usb_ids`) udev
        knows now, whatever it presents (ttys, a network interface, only a CD-ROM)."""
        out = []
        for dev in context.list_devices(subsystem="usb", DEVTYPE="usb_device"):
            device = Path(dev.sys_path)
            usb_id = usb_id_of(device)
            if usb_id[:4] in MODEM_VENDORS or usb_id in self.extra_ids:
                out.append(device)
        return out

    async def _find(self, context: Any) -> DeviceAdded | None:
        for device in self.scan(context):
            stick = await asyncio.to_thread(read_stick, device)
            event = await stick_event(stick, self.data,
                                      lambda n: probe_port(n, self.opener),
                                      self.dev_dir, self.at_port)
            if event is not None:
                return event
        return None

    async def events(self) -> AsyncIterator[DeviceEvent]:
        """Yield the modem found at start, then follow udev add/remove events."""
        import pyudev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        monitor.filter_by("tty")
        monitor.filter_by("net")
        monitor.start()
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        pending: list[tuple[str, str]] = []

        def readable() -> None:
            while True:
                dev = monitor.poll(timeout=0)
                if dev is None:
                    break
                pending.append((dev.action or "", dev.device_node or dev.sys_name or ""))
                wake.set()

        loop.add_reader(monitor.fileno(), readable)
        try:
            found = await self._find(context)
            if found:
                self.current = found
                yield found
            else:
                LOG.info("no modem found at start; waiting for a USB stick to be plugged in")
            while True:
                await wake.wait()
                wake.clear()
                actions, pending[:] = list(pending), []
                cur = self.current
                if cur and any(a == "remove" and n in (cur.port, cur.data_port, cur.net)
                               for a, n in actions):
                    yield DeviceRemoved(cur.port)
                    self.current = None
                if self.current is None and any(a == "add" for a, _ in actions):
                    await asyncio.sleep(self.settle)  # a stick's ttys arrive one by one
                    found = await self._find(context)
                    if found:
                        self.current = found
                        yield found
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(monitor.fileno())
