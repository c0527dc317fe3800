"""USB recovery through a recording pyusb backend and a fake sysfs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from failberry.modem.errors import UsbPowerError
from failberry.modem.usbpower import PowerRefused, SysfsUsbPower, hub_and_port, usb_network_devices
from modem_fakes.usbfake import RecordingBackend, fake_sysfs


def test_hub_and_port() -> None:
    assert hub_and_port("1-1.2") == ("1-1", 2)
    assert hub_and_port("1-1.3.4") == ("1-1.3", 4)
    assert hub_and_port("2-3") == ("usb2", 3)
    with pytest.raises(UsbPowerError):
        hub_and_port("../../etc")


def test_network_adapters_found_from_sysfs(tmp_path: Path) -> None:
    assert usb_network_devices(fake_sysfs(tmp_path)) == {"1-1.1"}


def test_power_cycle_sends_clear_then_set_port_power(tmp_path: Path) -> None:
    backend = RecordingBackend(ganged=False)
    slept: list[float] = []
    usb = SysfsUsbPower(fake_sysfs(tmp_path), backend, off_time=2.5, sleep=slept.append)
    usb.power_cycle("1-1.2")
    packets = [t.setup_packet() for t in backend.transfers]
    assert packets == [
        bytes([0xA0, 0x06, 0x00, 0x29, 0x00, 0x00, 0x09, 0x00]),  # GetHubDescriptor
        bytes([0x23, 0x01, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00]),  # ClearPortFeature(POWER, 2)
        bytes([0x23, 0x03, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00]),  # SetPortFeature(POWER, 2)
    ]
    assert slept == [2.5]


def test_ganged_hub_with_ethernet_is_refused(tmp_path: Path) -> None:
    """Pi 2B/3B: the Ethernet adapter is port 1 of hub 1-1, whose ports are ganged."""
    backend = RecordingBackend(ganged=True)
    usb = SysfsUsbPower(fake_sysfs(tmp_path), backend, sleep=lambda _s: None)
    with pytest.raises(PowerRefused, match=r"1-1\.1"):
        usb.power_cycle("1-1.2")
    assert [t.bRequest for t in backend.transfers] == [0x06]  # only read the descriptor


def test_never_cut_the_ethernet_port_itself(tmp_path: Path) -> None:
    backend = RecordingBackend(ganged=False)
    usb = SysfsUsbPower(fake_sysfs(tmp_path), backend, sleep=lambda _s: None)
    with pytest.raises(PowerRefused, match=r"network adapter 1-1\.1 is behind it"):
        usb.power_cycle("1-1.1")
    assert all(t.bmRequestType != 0x23 for t in backend.transfers)


def test_sysfs_disable_is_preferred(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path)
    port = root / "bus" / "usb" / "devices" / "1-1" / "1-1:1.0" / "1-1-port2"
    port.mkdir(parents=True)
    (port / "disable").write_text("0")
    writes: list[str] = []
    backend = RecordingBackend(ganged=False)
    usb = SysfsUsbPower(root, backend, sleep=lambda _s: writes.append(
        (port / "disable").read_text()))
    usb.power_cycle("1-1.2")
    assert writes == ["1"] and (port / "disable").read_text() == "0"
    assert all(t.bmRequestType != 0x23 for t in backend.transfers)


def test_rebind_writes_unbind_then_bind(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path)
    drv = root / "bus" / "usb" / "drivers" / "usb"
    order: list[tuple[str, str]] = []
    usb = SysfsUsbPower(root, RecordingBackend(), sleep=lambda _s: order.append(
        ("unbind", (drv / "unbind").read_text())))
    usb.rebind("1-1.2")
    assert order == [("unbind", "1-1.2")] and (drv / "bind").read_text() == "1-1.2"


def test_missing_hub_is_a_clear_error(tmp_path: Path) -> None:
    usb = SysfsUsbPower(tmp_path, RecordingBackend(), sleep=lambda _s: None)
    with pytest.raises(UsbPowerError, match="hub 1-1"):
        usb.power_cycle("1-1.2")
