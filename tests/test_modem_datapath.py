"""Discovery of the data path from sysfs trees of real sticks (tests/modem_fakes/sticks.py):
the path, the AT port, the data port and the network interface each stick is driven by."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from failberry.config import parse
from failberry.errors import ConfigError
from failberry.modem.datapath import DataPath, plan, read_stick, usb_device_of
from failberry.modem.discovery import stick_event
from modem_fakes.sticks import STICKS, build


def event_for(tmp_path: Path, name: str, data: str = "auto") -> tuple[object, ...] | None:
    device = build(tmp_path / "sys", name)
    answers = set(STICKS[name]["answers"])

    async def answer(node: str) -> bool:
        return Path(node).name in answers

    event = asyncio.run(stick_event(read_stick(device), data, answer, Path("/dev")))
    if event is None:
        return None

    def short(p: str | None) -> str | None:
        return Path(p).name if p and p.startswith("/dev/") else None

    return (event.data, short(event.port), short(event.data_port), event.net)


@pytest.mark.parametrize("name", sorted(STICKS))
def test_real_sticks_get_the_right_path_and_ports(tmp_path: Path, name: str) -> None:
    assert event_for(tmp_path, name) == STICKS[name]["want"]


def test_sysfs_reading_of_the_e3372(tmp_path: Path) -> None:
    stick = read_stick(build(tmp_path / "sys", "e3372_stick"))
    assert stick.usb_id == "12d1:1506" and stick.usb_path == "1-1.2"
    assert stick.ttys == ("ttyUSB0", "ttyUSB1") and stick.nets == ("wwan0",)
    assert stick.net_driver == "huawei_cdc_ncm" and not stick.storage_only
    # from the network interface back to its USB device (how "auto" follows the stick)
    assert usb_device_of(tmp_path / "sys/class/net/wwan0") == \
        (tmp_path / "sys/bus/usb/devices/1-1.2").resolve()


def test_cdrom_mode_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert event_for(tmp_path, "e3372_cdrom") is None
    assert "still in CD-ROM mode" in caplog.text


def test_configured_path_overrides(tmp_path: Path) -> None:
    # An EC25 in ECM mode can still be dialed with PPP on its modem port.
    assert event_for(tmp_path, "quectel_ec25_ecm", "ppp") == \
        ("ppp", "ttyUSB2", "ttyUSB3", None)
    stick = read_stick(build(tmp_path / "sys2", "zte_mf180"))
    assert plan(stick, "ncm") is None  # no network interface: nothing to drive
    assert plan(stick, "auto") is not None and plan(stick).path is DataPath.PPP  # type: ignore


def test_no_answering_port_is_no_modem(tmp_path: Path) -> None:
    device = build(tmp_path / "sys", "zte_mf823")

    async def never(node: str) -> bool:
        return False

    assert asyncio.run(stick_event(read_stick(device), "auto", never)) is None


def test_data_key_is_checked() -> None:
    base = '[modem]\napn = "internet"\n'
    assert parse(base + 'data = "ncm"\n').modem.data == "ncm"
    assert parse(base).modem.data == "auto"
    with pytest.raises(ConfigError, match=r"modem\.data"):
        parse(base + 'data = "qmi"\n')


class FakeUdev:
    """pyudev's Context as UdevDiscovery.scan uses it: USB devices by their sysfs path."""

    class Device:
        def __init__(self, sys_path: Path) -> None:
            self.sys_path = str(sys_path)

    def __init__(self, *devices: Path) -> None:
        self.devices = devices

    def list_devices(self, **match: str) -> list[FakeUdev.Device]:
        assert match == {"subsystem": "usb", "DEVTYPE": "usb_device"}
        return [self.Device(d) for d in self.devices]


def test_udev_discovery_finds_the_stick_whose_ports_answer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import subprocess
    import sys
    import time

    from failberry.modem.at import open_serial
    from failberry.modem.discovery import UdevDiscovery
    from modem_fakes.rig import FAKES

    caplog.set_level("INFO")
    cdrom = build(tmp_path / "sys", "e3372_cdrom", "1-1.3")
    mf180 = build(tmp_path / "sys2", "zte_mf180", "1-1.2")
    dev = tmp_path / "dev"
    dev.mkdir()
    modem = subprocess.Popen([sys.executable, str(FAKES / "fake_modem.py"), str(dev),
                              json.dumps({})])
    try:
        for _ in range(200):
            if (dev / "ttyUSB2").exists():
                break
            time.sleep(0.02)
        found = UdevDiscovery(open_serial, dev_dir=dev)
        event = asyncio.run(found._find(FakeUdev(cdrom, mf180)))
    finally:
        modem.terminate()
        modem.wait(10)
    # ttyUSB0 (diagnostics) does not exist here, ttyUSB1 and ttyUSB2 answer AT
    assert event is not None
    assert (event.port, event.data_port, event.usb_path, event.data, event.net) == \
        (str(dev / "ttyUSB1"), str(dev / "ttyUSB2"), "1-1.2", "ppp", None)
    assert "12d1:1f01 on 1-1.3: still in CD-ROM mode" in caplog.text
