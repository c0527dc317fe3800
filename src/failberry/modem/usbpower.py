"""USB recovery for a wedged modem: re-enumerate it (sysfs unbind/bind), or cut and restore
power on the hub port it sits behind (the kernel's `portN/disable` where it exists, else the
USB 2.0 hub class requests ClearPortFeature/SetPortFeature(PORT_POWER) through pyusb).

Never cuts power that the Ethernet adapter needs: on the Pi 2B/3B the LAN951x Ethernet is
port 1 of hub 1-1, whose ports are ganged, so a port power-cycle there is refused."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from failberry.modem.errors import UsbPowerError

LOG = logging.getLogger(__name__)

# USB 2.0 11.24.2: hub class requests to a port: bmRequestType 0x23 = host-to-device, class,
# recipient "other" (the port); wIndex is the port number.
PORT_REQUEST = 0x23
CLEAR_FEATURE = 0x01
SET_FEATURE = 0x03
PORT_POWER = 8  # USB 2.0 table 11-17 feature selector
# GetHubDescriptor (11.24.2.10): bmRequestType 0xA0, GET_DESCRIPTOR, wValue type 0x29 << 8.
HUB_DESCRIPTOR_REQUEST = 0xA0
GET_DESCRIPTOR = 0x06
HUB_DESCRIPTOR = 0x29

_USB_NAME = re.compile(r"^\d+-\d+(\.\d+)*$")


class PowerRefused(UsbPowerError):
    """Cutting this port would also cut something we must keep (the Ethernet adapter)."""


class UsbPower(Protocol):
    """The USB recovery seam the modem driver uses."""

    def rebind(self, usb_path: str) -> None:
        """Unbind and rebind the device so the kernel enumerates it again."""

    def power_cycle(self, usb_path: str) -> None:
        """Cut and restore power on the port the device sits behind."""


def hub_and_port(usb_path: str) -> tuple[str, int]:
    """`1-1.2` -> (`1-1`, 2); `1-2` -> (`usb1`, 2), the root hub."""
    if not _USB_NAME.match(usb_path):
        raise UsbPowerError(f"{usb_path!r} is not a USB device name such as 1-1.2")
    if "." in usb_path:
        hub, _, port = usb_path.rpartition(".")
        return hub, int(port)
    bus, _, port = usb_path.partition("-")
    return f"usb{bus}", int(port)


def _port_of(usb_path: str) -> tuple[str, int] | None:
    try:
        return hub_and_port(usb_path)
    except UsbPowerError:
        return None


def usb_network_devices(sysroot: Path) -> set[str]:
    """USB device names (`1-1.1`) of the network adapters in /sys/class/net, except a
    modem's own `wwan*` functions."""
    out = set()
    net = sysroot / "class" / "net"
    for dev in sorted(net.glob("*/device")) if net.is_dir() else []:
        if dev.parent.name.startswith("wwan"):
            continue
        try:
            target = dev.resolve()
        except OSError:
            continue
        names = [p for p in target.parts if _USB_NAME.match(p)]
        if names:
            out.add(names[-1])
    return out


class SysfsUsbPower:
    """USB recovery through sysfs and pyusb. `backend` is a pyusb backend (None: libusb)."""

    def __init__(self, sysroot: Path = Path("/sys"), backend: Any = None,
                 off_time: float = 3.0, sleep: Callable[[float], None] = time.sleep,
                 protected: set[str] | None = None) -> None:
        self.sysroot = sysroot
        self.backend = backend
        self.off_time = off_time
        self.sleep = sleep
        self.protected = protected

    def _devices(self) -> Path:
        return self.sysroot / "bus" / "usb" / "devices"

    def _write(self, path: Path, text: str) -> None:
        try:
            path.write_text(text)
        except OSError as exc:
            raise UsbPowerError(f"cannot write {text!r} to {path}: {exc}") from None

    def rebind(self, usb_path: str) -> None:
        """Unbind and bind the device in the generic `usb` driver (re-enumeration)."""
        hub_and_port(usb_path)  # validates the name
        driver = self.sysroot / "bus" / "usb" / "drivers" / "usb"
        LOG.info("usb: unbinding and rebinding %s", usb_path)
        self._write(driver / "unbind", usb_path)
        self.sleep(1.0)
        self._write(driver / "bind", usb_path)

    def _protected(self) -> set[str]:
        return self.protected if self.protected is not None \
            else usb_network_devices(self.sysroot)

    def check_safe(self, usb_path: str, ganged: bool | None) -> None:
        """Refuse when the port (or its gang) also powers a network adapter."""
        hub, port = hub_and_port(usb_path)
        for p in sorted(self._protected()):
            if p == usb_path or p.startswith(usb_path + "."):
                raise PowerRefused(f"not cutting {hub} port {port}: network adapter {p} "
                                   "is behind it")
            where = _port_of(p)
            same_hub = where is not None and (where[0] == hub or where[0].startswith(hub + "."))
            if same_hub and ganged is not False:
                # A ganged hub switches all its ports together (or not at all until every
                # port is off): cutting the modem cuts the Ethernet adapter too.
                raise PowerRefused(f"not cutting {hub} port {port}: hub {hub} switches its "
                                   f"ports together ({'ganged' if ganged else 'unknown'}) and "
                                   f"network adapter {p} is on it")

    def _hub_device(self, hub: str) -> Any:
        import usb.core

        base = self._devices() / hub
        try:
            bus = int((base / "busnum").read_text())
            address = int((base / "devnum").read_text())
        except (OSError, ValueError) as exc:
            raise UsbPowerError(f"cannot read bus/device number of hub {hub}: {exc}") from None
        dev = usb.core.find(backend=self.backend, bus=bus, address=address)
        if dev is None:
            raise UsbPowerError(f"hub {hub} (bus {bus} device {address}) not found by pyusb")
        return dev

    def hub_ganged(self, dev: Any) -> bool | None:
        """From the hub descriptor's wHubCharacteristics bits 1:0 (USB 2.0 table 11-13)."""
        try:
            desc = bytes(dev.ctrl_transfer(HUB_DESCRIPTOR_REQUEST, GET_DESCRIPTOR,
                                           HUB_DESCRIPTOR << 8, 0, 9))
        except Exception as exc:  # noqa: BLE001 - usb.core.USBError and backend errors
            LOG.warning("usb: cannot read hub descriptor: %s", exc)
            return None
        if len(desc) < 5 or desc[1] != HUB_DESCRIPTOR:
            return None
        mode = desc[3] & 0x03
        return {0: True, 1: False}.get(mode)

    def power_cycle(self, usb_path: str) -> None:
        """Cut the port's power for `off_time` seconds, then restore it."""
        import usb.util

        hub, port = hub_and_port(usb_path)
        dev = self._hub_device(hub)
        try:
            self.check_safe(usb_path, self.hub_ganged(dev))
            disable = (self._devices() / hub / f"{hub.removeprefix('usb')}-0:1.0"
                       if hub.startswith("usb") else self._devices() / hub / f"{hub}:1.0")
            disable = disable / f"{hub}-port{port}" / "disable"
            if disable.exists():
                LOG.info("usb: disabling %s port %d via %s", hub, port, disable)
                self._write(disable, "1")
                self.sleep(self.off_time)
                self._write(disable, "0")
                return
            LOG.info("usb: power-cycling %s port %d (ClearPortFeature PORT_POWER)", hub, port)
            try:
                dev.ctrl_transfer(PORT_REQUEST, CLEAR_FEATURE, PORT_POWER, port, None)
                self.sleep(self.off_time)
            finally:
                # Power goes back on even if the wait was interrupted.
                dev.ctrl_transfer(PORT_REQUEST, SET_FEATURE, PORT_POWER, port, None)
        except PowerRefused:
            raise
        except UsbPowerError:
            raise
        except Exception as exc:  # noqa: BLE001 - usb.core.USBError from the backend
            raise UsbPowerError(f"power-cycling {hub} port {port} failed: {exc}") from None
        finally:
            usb.util.dispose_resources(dev)
