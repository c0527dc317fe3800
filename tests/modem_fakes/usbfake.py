"""A pyusb 1.2.1 backend (`usb.backend.IBackend`) with one USB hub on it that records every
control transfer, and a fake sysfs tree for the device names usbpower reads."""

from __future__ import annotations

import array
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import usb.backend


@dataclass
class _Desc:
    bLength: int = 18
    bDescriptorType: int = 1
    bcdUSB: int = 0x0200
    bDeviceClass: int = 9  # hub
    bDeviceSubClass: int = 0
    bDeviceProtocol: int = 2
    bMaxPacketSize0: int = 64
    idVendor: int = 0x0424
    idProduct: int = 0x2514
    bcdDevice: int = 0x0B3
    iManufacturer: int = 0
    iProduct: int = 0
    iSerialNumber: int = 0
    bNumConfigurations: int = 1
    address: int = 2
    bus: int = 1
    port_number: int = 1
    port_numbers: tuple[int, ...] = (1,)
    speed: int = 3


@dataclass
class Transfer:
    """One control transfer as the backend saw it."""

    bmRequestType: int
    bRequest: int
    wValue: int
    wIndex: int
    data: bytes

    def setup_packet(self) -> bytes:
        """The 8-byte SETUP packet on the wire (USB 2.0 9.3), little-endian."""
        length = len(self.data)
        return struct.pack("<BBHHH", self.bmRequestType, self.bRequest, self.wValue,
                           self.wIndex, length)


@dataclass
class RecordingBackend(usb.backend.IBackend):  # type: ignore[misc]
    """One hub at bus 1 address 2; `ganged` picks wHubCharacteristics' power mode."""

    ganged: bool = False
    ports: int = 4
    transfers: list[Transfer] = field(default_factory=list)
    opened: int = 0

    def enumerate_devices(self) -> Any:
        yield "hub-1-1"

    def get_device_descriptor(self, dev: Any) -> _Desc:
        return _Desc()

    def open_device(self, dev: Any) -> str:
        self.opened += 1
        return "handle"

    def close_device(self, dev_handle: Any) -> None:
        pass

    def ctrl_transfer(self, dev_handle: Any, bmRequestType: int,  # noqa: PLR0917 - pyusb's
                      bRequest: int, wValue: int, wIndex: int, data: Any, timeout: int) -> int:
        if bmRequestType & 0x80:  # IN: answer GetHubDescriptor
            characteristics = 0x0000 if self.ganged else 0x0001
            desc = struct.pack("<BBBHBB", 9, 0x29, self.ports, characteristics, 50, 0) + \
                b"\x00\xff"
            n = min(len(data), len(desc))
            data[:n] = array.array("B", desc[:n])
            self.transfers.append(Transfer(bmRequestType, bRequest, wValue, wIndex,
                                           bytes(len(data))))
            return n
        self.transfers.append(Transfer(bmRequestType, bRequest, wValue, wIndex,
                                       bytes(data) if data is not None else b""))
        return len(data) if data is not None else 0


def fake_sysfs(root: Path, ethernet: str | None = "1-1.1") -> Path:
    """A /sys with hub 1-1 (bus 1 device 2), the usb driver's bind files, and eth0 on USB."""
    dev = root / "bus" / "usb" / "devices" / "1-1"
    dev.mkdir(parents=True)
    (dev / "busnum").write_text("1\n")
    (dev / "devnum").write_text("2\n")
    drv = root / "bus" / "usb" / "drivers" / "usb"
    drv.mkdir(parents=True)
    (drv / "bind").write_text("")
    (drv / "unbind").write_text("")
    if ethernet:
        real = root / "devices" / "platform" / "soc" / "usb1" / "1-1" / ethernet / \
            f"{ethernet}:1.0"
        real.mkdir(parents=True)
        net = root / "class" / "net" / "eth0"
        net.mkdir(parents=True)
        os.symlink(real, net / "device")
    return root
