"""sysfs trees of real sticks, as the kernel lays them out on a Pi (USB ids, interface
classes, bound drivers, the ttys and network interfaces under each interface), and which of
their ttys answer `AT`. Built under a test's tmp directory:

    /sys/devices/platform/soc/usb1/1-1/1-1.2/{idVendor,idProduct,bDeviceClass}
    /sys/devices/.../1-1.2/1-1.2:1.N/{bInterfaceNumber,bInterfaceClass,...,driver -> ...}
    /sys/devices/.../1-1.2/1-1.2:1.N/ttyUSB0            (option, usb_wwan)
    /sys/devices/.../1-1.2/1-1.2:1.N/net/wwan0          (cdc_ncm, cdc_ether, ...)
    /sys/bus/usb/devices/1-1.2 -> the device; /sys/class/{tty,net}/X/device -> the interface

Sources: `lsusb -v` / `usb-devices` listings published for each model, the kernel's option
and huawei_cdc_ncm id tables, and Quectel's EC25 USB interface guide (AT+QCFG="usbnet",1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# (number, class, subclass, protocol, driver, ttys, nets)
Iface = tuple[int, str, str, str, str, tuple[str, ...], tuple[str, ...]]

STICKS: dict[str, dict[str, Any]] = {
    # Huawei E3372s in "stick" mode (after usb_modeswitch -J / AT^SETPORT): modem port,
    # NCM data interface with its cdc-wdm, PCUI (AT) port, SD card reader.
    "e3372_stick": {"id": "12d1:1506", "ifaces": [
        (0, "ff", "02", "01", "option", ("ttyUSB0",), ()),
        (1, "ff", "02", "16", "huawei_cdc_ncm", (), ("wwan0",)),
        (2, "ff", "02", "02", "option", ("ttyUSB1",), ()),
        (3, "08", "06", "50", "usb-storage", (), ()),
    ], "answers": ("ttyUSB0", "ttyUSB1"),
        "want": ("ncm", "ttyUSB0", "ttyUSB0", "wwan0")},
    # Huawei E3372h HiLink: CDC-ECM to its own router, SD card; no serial port at all.
    "e3372_hilink": {"id": "12d1:14dc", "ifaces": [
        (0, "02", "06", "00", "cdc_ether", (), ("eth1",)),
        (1, "0a", "00", "00", "cdc_ether", (), ()),
        (2, "08", "06", "50", "usb-storage", (), ()),
    ], "answers": (), "want": ("hilink", None, None, "eth1")},
    # The same stick before usb-modeswitch: a CD-ROM.
    "e3372_cdrom": {"id": "12d1:1f01", "ifaces": [
        (0, "08", "06", "50", "usb-storage", (), ()),
    ], "answers": (), "want": None},
    # ZTE MF823: CDC-ECM data, a diagnostics port and an AT port (AT+ZECMCALL), storage.
    "zte_mf823": {"id": "19d2:1405", "ifaces": [
        (0, "02", "06", "00", "cdc_ether", (), ("usb0",)),
        (1, "0a", "00", "00", "cdc_ether", (), ()),
        (2, "ff", "ff", "ff", "option", ("ttyUSB0",), ()),
        (3, "ff", "ff", "ff", "option", ("ttyUSB1",), ()),
        (4, "08", "06", "50", "usb-storage", (), ()),
    ], "answers": ("ttyUSB1",), "want": ("ecm", "ttyUSB1", "ttyUSB1", "usb0")},
    # ZTE MF180 (3G): diagnostics, AT, storage, "Modem" port: PPP.
    "zte_mf180": {"id": "19d2:0031", "ifaces": [
        (0, "ff", "ff", "ff", "option", ("ttyUSB0",), ()),
        (1, "ff", "ff", "ff", "option", ("ttyUSB1",), ()),
        (2, "08", "06", "50", "usb-storage", (), ()),
        (3, "ff", "ff", "ff", "option", ("ttyUSB2",), ()),
    ], "answers": ("ttyUSB1", "ttyUSB2"), "want": ("ppp", "ttyUSB1", "ttyUSB2", None)},
    # Quectel EC25 with AT+QCFG="usbnet",1 (ECM): DM, NMEA, AT, modem, then CDC-ECM.
    "quectel_ec25_ecm": {"id": "2c7c:0125", "ifaces": [
        (0, "ff", "ff", "ff", "option", ("ttyUSB0",), ()),
        (1, "ff", "00", "00", "option", ("ttyUSB1",), ()),
        (2, "ff", "00", "00", "option", ("ttyUSB2",), ()),
        (3, "ff", "00", "00", "option", ("ttyUSB3",), ()),
        (4, "02", "06", "00", "cdc_ether", (), ("usb0",)),
        (5, "0a", "00", "00", "cdc_ether", (), ()),
    ], "answers": ("ttyUSB2", "ttyUSB3"), "want": ("ecm", "ttyUSB2", "ttyUSB2", "usb0")},
}


def build(sysroot: Path, name: str, usb_path: str = "1-1.2") -> Path:
    """Lay out stick `name` under `sysroot`; the USB device directory."""
    spec = STICKS[name]
    vid, pid = spec["id"].split(":")
    device = sysroot / "devices/platform/soc/usb1/1-1" / usb_path
    device.mkdir(parents=True)
    for fname, value in (("idVendor", vid), ("idProduct", pid), ("bDeviceClass", "00")):
        (device / fname).write_text(value + "\n")
    drivers = sysroot / "bus/usb/drivers"
    links = sysroot / "bus/usb/devices"
    links.mkdir(parents=True, exist_ok=True)
    os.symlink(device, links / usb_path)
    for number, klass, sub, proto, driver, ttys, nets in spec["ifaces"]:
        iface = device / f"{usb_path}:1.{number}"
        iface.mkdir()
        for fname, value in (("bInterfaceNumber", f"{number:02x}"), ("bInterfaceClass", klass),
                             ("bInterfaceSubClass", sub), ("bInterfaceProtocol", proto)):
            (iface / fname).write_text(value + "\n")
        (drivers / driver).mkdir(parents=True, exist_ok=True)
        os.symlink(drivers / driver, iface / "driver")
        for tty in ttys:
            (iface / tty).mkdir()
            (sysroot / "class/tty").mkdir(parents=True, exist_ok=True)
            os.symlink(iface / tty, sysroot / "class/tty" / tty)
        for net in nets:
            (iface / "net" / net).mkdir(parents=True)
            (sysroot / "class/net").mkdir(parents=True, exist_ok=True)
            os.symlink(iface / "net" / net, sysroot / "class/net" / net)
    return links / usb_path
