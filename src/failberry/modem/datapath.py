"""Which data path a stick offers, read from what it presents in sysfs: its USB interfaces'
classes and drivers, their ttys and network interfaces.

- `ppp`: serial ports only (`option`, `usb_wwan`, `qcserial`, `cdc_acm`): dial with pppd.
- `ncm` / `ecm`: AT ports and a network interface (`cdc_ncm`, `huawei_cdc_ncm` / `cdc_ether`,
  `rndis_host`): the bearer is brought up by AT, the address comes by DHCP on the interface.
- `hilink`: a network interface and no serial port at all: the stick is a small router with a
  DHCP server and a web API.

A stick still in its CD-ROM mode (usb-storage only) has no path until usb-modeswitch switches
it; `Stick.storage_only` says so."""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from failberry.modem.session import Session

LOG = logging.getLogger(__name__)


class DataPath(enum.StrEnum):
    """How data flows through a stick."""

    PPP = "ppp"
    NCM = "ncm"
    ECM = "ecm"
    HILINK = "hilink"


DATA_CHOICES = ("auto", *(p.value for p in DataPath))
SERIAL_DRIVERS = frozenset({"option", "usb_wwan", "qcserial", "cdc_acm", "sierra",
                            "usbserial_generic"})
NCM_DRIVERS = frozenset({"cdc_ncm", "huawei_cdc_ncm"})
ECM_DRIVERS = frozenset({"cdc_ether", "rndis_host", "cdc_eem"})


@dataclass(frozen=True)
class UsbInterface:
    """One USB interface of a stick as sysfs shows it."""

    number: int
    klass: str  # bInterfaceClass, two hex digits: "ff" vendor, "02" CDC, "08" storage
    subclass: str
    protocol: str
    driver: str  # "" when no driver is bound
    ttys: tuple[str, ...] = ()
    nets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stick:
    """A USB device and its interfaces."""

    usb_path: str  # sysfs name, "1-1.2"
    usb_id: str  # "12d1:1506"
    interfaces: tuple[UsbInterface, ...]

    @property
    def ttys(self) -> tuple[str, ...]:
        """Serial ports in interface order (ttyUSB0, ...)."""
        return tuple(t for i in self.interfaces if i.driver in SERIAL_DRIVERS for t in i.ttys)

    @property
    def nets(self) -> tuple[str, ...]:
        """Network interfaces (wwan0, usb0, eth1)."""
        return tuple(n for i in self.interfaces for n in i.nets)

    @property
    def net_driver(self) -> str:
        """The driver of the first interface carrying a network interface, or ""."""
        return next((i.driver for i in self.interfaces if i.nets), "")

    @property
    def storage_only(self) -> bool:
        """Only mass storage: the stick is still in its CD-ROM mode."""
        return bool(self.interfaces) and all(i.klass == "08" for i in self.interfaces)


@dataclass(frozen=True)
class Plan:
    """What to drive: the path, the ttys that may answer AT (interface order) and the network
    interface carrying data (None for PPP)."""

    path: DataPath
    ttys: tuple[str, ...]
    net: str | None

    def describe(self) -> str:
        """`ncm on wwan0, AT on ttyUSB0/ttyUSB1`."""
        where = f" on {self.net}" if self.net else ""
        at = f", AT on {'/'.join(self.ttys)}" if self.ttys else ", no AT port"
        return f"{self.path.value}{where}{at}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def read_stick(device: Path) -> Stick:
    """The stick whose sysfs USB device directory is `device` (/sys/bus/usb/devices/1-1.2)."""
    device = device.resolve()
    interfaces = []
    for iface in sorted(device.glob(f"{device.name}:*")):
        driver_link = iface / "driver"
        driver = os.path.basename(os.readlink(driver_link)) if driver_link.is_symlink() else ""
        ttys = sorted([*(p.name for p in iface.glob("ttyUSB*")),
                       *(p.name for p in iface.glob("tty/ttyACM*"))])
        nets = sorted(p.name for p in iface.glob("net/*"))
        try:
            number = int(_read(iface / "bInterfaceNumber") or "ff", 16)
        except ValueError:
            continue
        interfaces.append(UsbInterface(number, _read(iface / "bInterfaceClass").lower(),
                                       _read(iface / "bInterfaceSubClass").lower(),
                                       _read(iface / "bInterfaceProtocol").lower(), driver,
                                       tuple(ttys), tuple(nets)))
    interfaces.sort(key=lambda i: i.number)
    return Stick(device.name, usb_id_of(device), tuple(interfaces))


def usb_id_of(device: Path) -> str:
    """`vendor:product` of a USB device directory in sysfs."""
    return f"{_read(device / 'idVendor').lower()}:{_read(device / 'idProduct').lower()}"


def usb_device_of(sys_dir: Path) -> Path | None:
    """The USB device directory above a tty's or network interface's sysfs directory
    (/sys/class/net/wwan0 -> .../1-1.2), or None when it is not on USB."""
    here = sys_dir.resolve()
    for parent in (here, *here.parents):
        if (parent / "idVendor").exists() and (parent / "bDeviceClass").exists():
            return parent
    return None


def net_of_tty(node: str, sysroot: Path = Path("/sys")) -> str | None:
    """The network interface of the stick a tty belongs to, from sysfs (it is found again
    after every re-enumeration, whatever the kernel named it); None when there is none."""
    name = os.path.basename(os.path.realpath(node))
    device = usb_device_of(sysroot / "class" / "tty" / name)
    if device is None:
        return None
    nets = read_stick(device).nets
    return nets[0] if nets else None


def plan(stick: Stick, data: str = "auto") -> Plan | None:
    """The path to drive `stick` by (`data` = "auto" decides from what it presents), or
    None when it offers none (storage only, or the configured path does not fit)."""
    ttys, nets = stick.ttys, stick.nets
    net = nets[0] if nets else None
    if data == "auto":
        if net is None:
            path = DataPath.PPP if ttys else None
        elif not ttys:
            path = DataPath.HILINK
        elif stick.net_driver in NCM_DRIVERS:
            path = DataPath.NCM
        else:
            path = DataPath.ECM
    else:
        path = DataPath(data)
    if path is None:
        return None
    if path is DataPath.PPP:
        return Plan(path, ttys, None) if ttys else None
    if net is None or (path is not DataPath.HILINK and not ttys):
        LOG.warning("modem %s: [modem] data = %r, but it has %s", stick.usb_id, data,
                    "no network interface" if net is None else "no serial port")
        return None
    return Plan(path, () if path is DataPath.HILINK else ttys, net)


class DataRunner(Protocol):
    """What carries the data once the stick is registered: pppd (`ppp.PppRunner`), the AT
    bearer with DHCP (`bearer.BearerRunner`) or the HiLink API. The machine starts it with
    StartPpp and stops it with StopPpp, whatever it is."""

    @property
    def exclusive(self) -> bool:
        """Does it need the data port to itself (pppd)? Else the AT port stays open."""

    @property
    def running(self) -> bool:
        """Is it running?"""

    @property
    def why(self) -> str:
        """Why the last run ended, in its own words ("" to go by the status)."""

    async def run(self, port: str, on_up: Callable[[str, str], None]) -> int:
        """Carry data until it ends; `on_up(interface, address)`; a pppd-style status."""

    async def stop(self) -> None:
        """Make `run` end."""

    def attach(self, session: Session) -> None:
        """The driver's AT session."""

    def select(self, data: str, net: str | None) -> None:
        """Discovery found a stick with this data path and network interface."""

    def urc(self, line: str) -> None:
        """An unsolicited line from the AT port."""


class Switch:
    """`[modem] data = "auto"`: the runner for the path discovery found."""

    def __init__(self, runners: Mapping[str, DataRunner], default: str = "ppp") -> None:
        self.runners = dict(runners)
        self.current = self.runners[default]

    @property
    def exclusive(self) -> bool:
        """The current runner's."""
        return self.current.exclusive

    @property
    def running(self) -> bool:
        """The current runner's."""
        return self.current.running

    @property
    def why(self) -> str:
        """The current runner's."""
        return self.current.why

    async def run(self, port: str, on_up: Callable[[str, str], None]) -> int:
        """Run the current runner."""
        return await self.current.run(port, on_up)

    async def stop(self) -> None:
        """Stop every runner (one may still be winding down after a switch)."""
        for runner in self.runners.values():
            await runner.stop()

    def attach(self, session: Session) -> None:
        """Give every runner the session."""
        for runner in self.runners.values():
            runner.attach(session)

    def select(self, data: str, net: str | None) -> None:
        """Switch to the runner for `data` (the ppp one for a path without its own)."""
        self.current = self.runners.get(data, self.current)
        self.current.select(data, net)

    def urc(self, line: str) -> None:
        """To the current runner."""
        self.current.urc(line)
