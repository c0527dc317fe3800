"""The smaller pieces: pppd's peer and chat files, discovery's choices, the reboot log."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from failberry.config import ModemConfig, Secret
from failberry.modem.at import open_serial
from failberry.modem.discovery import (
    PathWatcher,
    candidate,
    choose_ports,
    find_at_port,
    probe_port,
    usb_ttys,
)
from failberry.modem.driver import RebootLog
from failberry.modem.events import DeviceAdded, DeviceRemoved
from failberry.modem.ppp import chat_script, terminate, write_ppp_files
from modem_fakes.rig import FAKES


def test_chat_script_sets_apn_runs_init_and_dials() -> None:
    cfg = ModemConfig(apn="internet.example", dial="*99***1#",
                      init=('AT+CGDCONT=2,"IP","ims"', "AT^SYSCFG=2,2,3FFFFFFF,1,2"))
    words = shlex.split(chat_script(cfg))
    pairs = list(zip(words[::2], words[1::2], strict=True))
    assert ("ABORT", "NO CARRIER") in pairs and ("ABORT", "BUSY") in pairs
    sends = [send for expect, send in pairs if expect in ("", "OK")]
    assert sends == ["AT", "ATE0", 'AT+CGDCONT=1,"IP","internet.example"',
                     'AT+CGDCONT=2,"IP","ims"', "AT^SYSCFG=2,2,3FFFFFFF,1,2", "ATD*99***1#"]
    assert pairs[-1] == ("CONNECT", "")


def test_peer_file_is_private_and_complete(tmp_path: Path) -> None:
    cfg = ModemConfig(apn="internet", username="web", password=Secret("s3cret"))
    files = write_ppp_files(cfg, "/dev/ttyUSB2", tmp_path, "ppp0")
    text = files.peer.read_text()
    lines = text.splitlines()
    assert lines[0] == "/dev/ttyUSB2"
    assert "ifname ppp0" in lines and "nodefaultroute" in lines and "maxfail 1" in lines
    assert 'user "web"' in lines and 'password "s3cret"' in lines
    connect = next(ln for ln in lines if ln.startswith("connect "))
    assert shlex.split(shlex.split(connect)[1])[-1] == str(files.chat)
    assert files.peer.stat().st_mode & 0o777 == 0o600
    assert files.chat.stat().st_mode & 0o777 == 0o600


def test_candidates_from_udev_properties() -> None:
    props = {"ID_VENDOR_ID": "19d2", "ID_MODEL_ID": "0031", "DEVNAME": "/dev/ttyUSB1",
             "ID_USB_INTERFACE_NUM": "01"}
    assert candidate(props, "1-1.2") is not None
    assert candidate({**props, "ID_MODEL_ID": "2000"}, "1-1.2") is None  # CD-ROM mode
    assert candidate({**props, "ID_VENDOR_ID": "0403"}, "1-1.3") is None  # an FTDI cable
    extra = candidate({**props, "ID_VENDOR_ID": "abcd"}, "1-1.3", ["abcd:0031"])
    assert extra is not None and extra.interface == 1
    a = candidate({**props, "DEVNAME": "/dev/ttyUSB3", "ID_USB_INTERFACE_NUM": "03"}, "1-1.2")
    b = candidate(props, "1-1.2")
    assert a is not None and b is not None
    assert choose_ports([a, b]) == (b, a)  # control: lowest interface; PPP: highest
    assert choose_ports([a]) == (a, a)
    assert choose_ports([]) is None


@pytest.mark.timeout(30)
def test_probing_and_watching_the_fake_modem(tmp_path: Path) -> None:
    async def go() -> None:
        proc = subprocess.Popen([sys.executable, str(FAKES / "fake_modem.py"), str(tmp_path),
                                 json.dumps({})])
        try:
            while not (tmp_path / "ttyUSB1").exists():
                await asyncio.sleep(0.02)
            assert await probe_port(str(tmp_path / "ttyUSB1"), open_serial)
            assert not await probe_port(str(tmp_path / "nothing"), open_serial)
            watcher = PathWatcher(str(tmp_path / "ttyUSB1"), interval=0.05)
            events = watcher.events()
            assert isinstance(await anext(events), DeviceAdded)
            (tmp_path / "ttyUSB1").unlink()  # the node vanishes
            assert await anext(events) == DeviceRemoved(str(tmp_path / "ttyUSB1"))
            await events.aclose()
        finally:
            proc.terminate()
            proc.wait(10)

    asyncio.run(go())


def test_reboot_log_round_trip(tmp_path: Path) -> None:
    log = RebootLog(tmp_path / "state" / "reboots.json")
    assert log.load() == ()
    log.save((1.0, 2.5))
    assert log.load() == (1.0, 2.5)
    (tmp_path / "state" / "reboots.json").write_text("{not json")
    assert log.load() == ()


def test_reboot_log_save_replaces_the_file_whole(tmp_path: Path) -> None:
    """A power cut during `save` must leave the old log or the new one, never a truncated
    file: the new log is written beside it and renamed over it (a reader holding the old
    file still reads the old times; rewriting in place would show it the new ones)."""
    path = tmp_path / "reboots.json"
    log = RebootLog(path)
    log.save((1.0,))
    with path.open() as old:
        log.save((1.0, 2.0))
        assert old.read() == "[1.0]"
    assert log.load() == (1.0, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reboots.json"]


def test_part_build_uses_the_real_seams() -> None:
    from failberry.bus import Bus
    from failberry.config import Config
    from failberry.modem.bearer import BearerRunner
    from failberry.modem.datapath import Switch
    from failberry.modem.discovery import UdevDiscovery
    from failberry.modem.hilink import HilinkRunner
    from failberry.modem.part import build
    from failberry.modem.ppp import PppRunner
    from failberry.modem.usbpower import SysfsUsbPower
    from failberry.parts import Seams
    from failberry.status import Status

    auto = build(Config(modem=ModemConfig(apn="internet")), Seams(Status(), Bus()))
    assert auto.name == "modem" and auto.deadline >= 60
    assert isinstance(auto.discovery, UdevDiscovery)
    assert isinstance(auto.driver.usb, SysfsUsbPower)
    switch = auto.driver.ppp  # data = "auto": the runner follows what discovery finds
    assert isinstance(switch, Switch) and isinstance(switch.runners["ppp"], PppRunner)
    assert switch.runners["ppp"].argv == ["/usr/sbin/pppd"]
    assert isinstance(switch.runners["ncm"], BearerRunner)
    assert switch.current is switch.runners["ppp"]
    switch.select("ncm", "wwan0")
    assert switch.current is switch.runners["ncm"] and not switch.exclusive
    fixed = build(Config(modem=ModemConfig(apn="internet", device="/dev/ttyUSB2")),
                  Seams(Status(), Bus()))
    assert isinstance(fixed.discovery, PathWatcher) and fixed.discovery.path == "/dev/ttyUSB2"
    assert isinstance(fixed.driver.ppp, PppRunner)
    ncm = build(Config(modem=ModemConfig(apn="internet", device="/dev/ttyUSB2", data="ncm")),
                Seams(Status(), Bus()))
    assert isinstance(ncm.driver.ppp, BearerRunner)
    assert isinstance(ncm.discovery, PathWatcher) and ncm.discovery.data == "ncm"
    assert ncm.discovery.data_path == "/dev/ttyUSB2"  # bearer and monitoring on one port
    assert isinstance(switch.runners["hilink"], HilinkRunner)
    assert auto.driver.hilink is not None and auto.driver.hilink.runner is switch.runners["hilink"]
    hl = build(Config(modem=ModemConfig(apn="internet", data="hilink")),
               Seams(Status(), Bus()))
    assert isinstance(hl.driver.ppp, HilinkRunner) and hl.driver.hilink is not None


def stick_sysfs(root: Path) -> Path:
    """A /sys where a ZTE stick 1-1.2 has ttyUSB0..2 on interfaces 0..2 (usb-serial style)."""
    usb = root / "devices" / "platform" / "soc" / "usb1" / "1-1" / "1-1.2"
    for n in range(3):
        port = usb / f"1-1.2:1.{n}" / f"ttyUSB{n}"
        port.mkdir(parents=True)
        (root / "class" / "tty" / f"ttyUSB{n}").mkdir(parents=True)
        os.symlink(port, root / "class" / "tty" / f"ttyUSB{n}" / "device")
    (usb / "1-1.2:1.3").mkdir()  # the stick's storage interface: no tty
    return root


@pytest.mark.timeout(30)
def test_configured_data_port_finds_its_sibling_at_port(tmp_path: Path) -> None:
    async def go() -> None:
        dev = tmp_path / "dev"
        dev.mkdir()
        sysroot = stick_sysfs(tmp_path / "sys")
        assert usb_ttys(str(dev / "ttyUSB2"), sysroot) == ("1-1.2",
                                                           ["ttyUSB0", "ttyUSB1", "ttyUSB2"])
        assert usb_ttys("/dev/nothing-like-it", sysroot) == (None, [])
        proc = subprocess.Popen([sys.executable, str(FAKES / "fake_modem.py"), str(dev),
                                 json.dumps({})])
        try:
            while not (dev / "ttyUSB2").exists():
                await asyncio.sleep(0.02)
            # ttyUSB0 has no node here (it does not answer), ttyUSB1 answers AT
            locate = functools.partial(find_at_port, opener=open_serial, sysroot=sysroot,
                                       dev_dir=dev)
            assert await locate(str(dev / "ttyUSB2")) == (str(dev / "ttyUSB1"), "1-1.2")
            watcher = PathWatcher(str(dev / "ttyUSB2"), str(dev / "ttyUSB2"), locate=locate)
            events = watcher.events()
            assert await anext(events) == DeviceAdded(str(dev / "ttyUSB1"),
                                                      str(dev / "ttyUSB2"), "1-1.2")
            await events.aclose()
        finally:
            proc.terminate()
            proc.wait(10)

    asyncio.run(go())


def test_part_build_takes_programs_and_directories_from_the_config() -> None:
    from failberry.bus import Bus
    from failberry.config import Config, PathsConfig, RecoveryConfig
    from failberry.modem.adapters import CommandReboot
    from failberry.modem.part import build
    from failberry.parts import Seams
    from failberry.status import Status

    cfg = Config(modem=ModemConfig(apn="internet", device="/dev/ttyUSB2",
                                   at_port="/dev/ttyUSB1", pppd="/opt/test/pppd"),
                 recovery=RecoveryConfig(reboot_command=("/bin/echo", "reboot")),
                 paths=PathsConfig(run_dir="/tmp/fb-run", state_dir="/tmp/fb-state"))
    part = build(cfg, Seams(Status(), Bus()))
    assert part.driver.ppp.argv == ["/opt/test/pppd"]
    assert part.driver.ppp.directory == Path("/tmp/fb-run/ppp")
    assert part.driver.reboot_log is not None
    assert part.driver.reboot_log.path == Path("/tmp/fb-state/reboots.json")
    assert isinstance(part.driver.rebooter, CommandReboot)
    assert part.driver.rebooter.argv == ["/bin/echo", "reboot"]
    assert isinstance(part.discovery, PathWatcher)
    assert (part.discovery.path, part.discovery.data_path) == ("/dev/ttyUSB1", "/dev/ttyUSB2")


# A pppd that ignores SIGTERM and left a helper holding its output pipe: the helper's pid is
# printed first, so the test can end it.
_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(helper.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(30)
def test_stopping_a_program_whose_helper_holds_its_output_is_bounded() -> None:
    async def go() -> float:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _STUBBORN, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        helper = int(await proc.stdout.readline())
        try:
            start = time.monotonic()
            await terminate(proc, 0.5, "pppd")
            took = time.monotonic() - start
            assert proc.returncode == -signal.SIGKILL
            return took
        finally:
            os.kill(helper, signal.SIGKILL)
            await asyncio.wait_for(proc.stdout.read(), 10)  # the pipe closes with the helper

    # SIGTERM ignored for the grace, SIGKILL, then at most the grace again for the reaping:
    # asyncio's wait() alone would wait the helper's 60 s for the pipe to close.
    assert asyncio.run(go()) < 5
