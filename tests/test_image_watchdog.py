"""Months unattended (issue 18): the hardware watchdog (systemd drop-in, QEMU's device, the
--hang-kernel check), the saved clock, and IPv6 off unless configured, in the root tree
customise_rootfs writes and in the built image."""

from __future__ import annotations

import configparser
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from failberry import config, statuscmd
from failberry.image import boottest, hangtest, ipv6, partimage, qemu
from failberry.image.customise import customise_rootfs
from failberry.image.runner import Runner
from test_image_customise import make_config, make_rootfs

MINIMAL = '[modem]\napn = "internet"\n'
WATCHDOG_DROPIN = "/etc/systemd/system.conf.d/90-failberry-watchdog.conf"
MODULES = "/etc/modules-load.d/failberry-watchdog.conf"
TIMESYNCD = "/etc/systemd/timesyncd.conf.d/90-failberry.conf"


def _ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _sysctls(text: str) -> dict[str, str]:
    """sysctl.d lines as {key with slashes: value}, in file order."""
    out = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, value = (p.strip() for p in line.split("=", 1))
            out[key.replace(".", "/") if "/" not in key else key] = value
    return out


def _boot_files(where: Path) -> qemu.BootFiles:
    for dtb in ("bcm2837-rpi-3-b.dtb", "bcm2836-rpi-2-b.dtb"):
        (where / dtb).write_bytes(b"")
    return qemu.BootFiles(where / "vmlinuz", where / "initrd", "root=LABEL=fbroot rw", where)


# ------------------------------------------------------------------------------ watchdog


def test_systemd_drives_the_watchdog_within_what_the_pis_timer_can_count(
        tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    result = customise_rootfs(make_config(tmp_path), root, out_dir=tmp_path)
    assert WATCHDOG_DROPIN in result.files and MODULES in result.files
    manager = _ini((root / WATCHDOG_DROPIN.lstrip("/")).read_text())["Manager"]
    runtime = manager["RuntimeWatchdogSec"]
    assert runtime.endswith("s") and 5 <= int(runtime[:-1]) <= 15  # bcm2835_wdt: at most 15 s
    assert manager["RebootWatchdogSec"] == "2min"
    modules = (root / MODULES.lstrip("/")).read_text().split("\n")
    # bcm2835_wdt exists in both Debian kernels (armmp and arm64); i6300esb only in arm64,
    # so it is not listed (a missing module fails systemd-modules-load) but loaded by udev.
    assert "bcm2835_wdt" in modules and "i6300esb" not in modules
    # failberryd keeps its own WatchdogSec=.
    unit = (root / "etc/systemd/system/failberryd.service").read_text()
    assert "WatchdogSec=30" in unit


def test_qemu_virt_arm64_has_a_watchdog_and_reboots_only_for_the_hang_test(
        tmp_path: Path) -> None:
    files = _boot_files(tmp_path)
    cfg = config.parse(MINIMAL)

    def argv(name: str, arch: str, reboot: bool = False) -> list[str]:
        return qemu.qemu_argv(qemu.machine_for(name, arch), files, tmp_path / "x.img", cfg,
                              health_port=4000, ssh_port=4001, reboot=reboot)

    virt = argv("virt", "arm64")
    # Only the hang test gets a watchdog: QEMU's counts host time, so a guest starved on a
    # busy host would be reset in an ordinary boot test.
    assert "-no-reboot" in virt and "i6300esb" not in virt
    hang = argv("virt", "arm64", reboot=True)
    i = hang.index("i6300esb")
    assert hang[i - 1] == "-device" and "-no-reboot" not in hang
    for name, arch in (("virt", "armhf"), ("raspi3b", "arm64"), ("raspi2b", "armhf")):
        assert "i6300esb" not in argv(name, arch), (name, arch)
        assert "-no-reboot" in argv(name, arch), (name, arch)
    # QEMU's Pi models reset at the first write that arms the SoC watchdog (seen: the raspi3b
    # boot ended right after "bcm2835-wdt: Broadcom BCM2835 watchdog timer"), so its driver
    # stays unloaded there; on virt the image's kernel line is left alone.
    for name, arch in (("raspi3b", "arm64"), ("raspi2b", "armhf")):
        line = argv(name, arch)[argv(name, arch).index("-append") + 1]
        assert "modprobe.blacklist=bcm2835_wdt" in line.split(), name
    assert "bcm2835_wdt" not in virt[virt.index("-append") + 1]


def test_hang_kernel_is_refused_where_qemu_gives_the_kernel_no_watchdog() -> None:
    for machine in qemu.MACHINES:
        expected = machine.name == "virt" and machine.arch == "arm64"
        assert bool(machine.watchdog) is expected, machine


def test_watchdog_facts_from_the_guest_read_as_words() -> None:
    assert hangtest.parse_facts("i6300ESB timer|15|active\n") == (
        "i6300ESB timer, timeout 15 s, active")
    assert hangtest.parse_facts("none\n") == ""
    assert hangtest.parse_facts("") == ""


class _Console:
    """A console that grows from another thread, as QEMU's reader thread makes it."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = ["[    0.000000] Booting Linux on physical CPU 0x0", "fbtest login:"]
        self._then = lines

    def play(self, delay: float) -> threading.Thread:
        def run() -> None:
            for line in self._then:
                time.sleep(delay)
                self.lines.append(line)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


def _stand_in_qemu() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"], process_group=0)  # Runner.stop signals the group


# The "guest" here is `sh -c` on this machine with harmless stand-ins for the remote
# commands: the real HANG string is never run outside a QEMU guest.
LOCAL = ["sh", "-c"]
HARMLESS = {"facts": "echo 'i6300ESB timer|15|active'", "hang": "true"}


def test_the_second_boot_after_the_panic_is_the_watchdog_reset() -> None:
    console = _Console(["sysrq: Trigger a crash",
                        "Kernel panic - not syncing: sysrq triggered crash",
                        "[    0.000000] Booting Linux on physical CPU 0x0"])
    fake = _stand_in_qemu()
    try:
        console.play(0.3)
        result = hangtest.hang_kernel(Runner(), fake, console.lines, LOCAL, limit=10,
                                      **HARMLESS)
    finally:
        Runner.stop(fake)
    assert result.failure == "" and result.reset_after is not None
    assert 0.0 < result.reset_after < 5.0
    assert result.line().startswith("hang-kernel: watchdog reset after ")
    assert "(i6300ESB timer, timeout 15 s, active)" in result.line()


def test_no_reset_within_the_limit_fails_and_a_guest_without_watchdog_is_named() -> None:
    console = _Console(["Kernel panic - not syncing: sysrq triggered crash"])
    fake = _stand_in_qemu()
    try:
        console.play(0.1)
        stuck = hangtest.hang_kernel(Runner(), fake, console.lines, LOCAL, limit=1.0,
                                     **HARMLESS)
        bare = hangtest.hang_kernel(Runner(), fake, console.lines, LOCAL, limit=1.0,
                                    facts="echo none", hang="true")
        idle = hangtest.hang_kernel(Runner(), fake, console.lines, LOCAL, limit=1.0,
                                    facts="echo 'i6300ESB timer|15|inactive'", hang="true")
    finally:
        Runner.stop(fake)
    assert stuck.reset_after is None
    assert stuck.failure == "no watchdog reset within 1 s after the panic"
    assert "has no /sys/class/watchdog/watchdog0" in bare.failure
    assert "not running" in idle.failure and "RuntimeWatchdogSec" in idle.failure


def test_boot_report_shows_the_hang_line() -> None:
    report = boottest.BootReport("virt, arm64", hang="hang-kernel: watchdog reset after 17.0 s")
    assert "  hang-kernel: watchdog reset after 17.0 s" in report.render().splitlines()


def test_status_says_when_the_reboot_budget_is_spent_and_the_board_stays_up() -> None:
    def lines(**modem: object) -> list[str]:
        doc = {"modem": {"state": "recovering", **modem}}
        return [ln for ln in statuscmd.render(doc, now=0.0) if "reboots" in ln]

    assert lines() == []  # an older supervisor without the keys
    assert lines(reboots_last_day=0, reboots_per_day=1, reboot_budget_spent=False) == []
    assert lines(reboots_last_day=1, reboots_per_day=2, reboot_budget_spent=False) == [
        "  reboots: 1 of 2 in the last day"]
    spent = lines(reboots_last_day=1, reboots_per_day=1, reboot_budget_spent=True)
    assert spent == ["  reboots: 1 of 1 in the last day, budget spent: the board stays up "
                     "(no reboot until one is older than a day)"]
    assert lines(reboots_last_day=0, reboots_per_day=0, reboot_budget_spent=True) == [
        "  reboots: never ([recovery] reboots_per_day = 0)"]


# ------------------------------------------------------------------------------ the clock


def test_timesyncd_saves_the_clock_hourly_not_every_minute(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    customise_rootfs(make_config(tmp_path), root, out_dir=tmp_path)
    time_section = _ini((root / TIMESYNCD.lstrip("/")).read_text())["Time"]
    assert time_section["SaveIntervalSec"] == "3600"


# ------------------------------------------------------------------------------ IPv6


def test_no_interface_takes_an_ipv6_address_unless_dyndns_wants_one() -> None:
    off = _sysctls(ipv6.ipv6_sysctls(config.parse(MINIMAL)))
    for scope in ("all", "default", "eth0"):
        assert off[f"net/ipv6/conf/{scope}/disable_ipv6"] == "1", scope
        assert off[f"net/ipv6/conf/{scope}/accept_ra"] == "0", scope
        assert off[f"net/ipv6/conf/{scope}/autoconf"] == "0", scope
    assert off["net/ipv6/conf/lo/disable_ipv6"] == "0"
    # `all` switches lo off too: lo's own line must come after it to win.
    keys = list(off)
    assert keys.index("net/ipv6/conf/lo/disable_ipv6") > keys.index(
        "net/ipv6/conf/all/disable_ipv6")
    on = _sysctls(ipv6.ipv6_sysctls(config.parse(
        MINIMAL + '[dyndns]\nipv6 = true\n[lan]\ninterface = "eth0.10"\n')))
    for scope in ("all", "default"):
        assert on[f"net/ipv6/conf/{scope}/disable_ipv6"] == "0", scope
        assert on[f"net/ipv6/conf/{scope}/accept_ra"] == "1", scope
    # The LAN never; a VLAN's dot stays part of the name (the slash form).
    assert on["net/ipv6/conf/eth0.10/disable_ipv6"] == "1"
    assert on["net/ipv6/conf/eth0.10/accept_ra"] == "0"


def test_the_ipv6_sysctls_are_on_the_customised_tree(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    cfg = make_config(tmp_path)
    customise_rootfs(cfg, root, out_dir=tmp_path)
    text = (root / ipv6.SYSCTL_FILE.lstrip("/")).read_text()
    assert text == ipv6.ipv6_sysctls(cfg)
    assert _sysctls(text)[f"net/ipv6/conf/{cfg.lan.interface}/disable_ipv6"] == "1"


# ------------------------------------------------------------------------------ the image


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1800)
def test_the_built_image_holds_the_watchdog_clock_and_ipv6_files(
        built: tuple[Path, str]) -> None:
    out, _ = built
    runner = Runner()
    _boot, root = partimage.boot_and_root(out)
    fs = f"{out}?offset={root.offset}"

    def cat(path: str) -> str:
        return runner.run(["debugfs", "-R", f"cat {path}", fs], capture=True).stdout.decode()

    assert _ini(cat(WATCHDOG_DROPIN))["Manager"]["RuntimeWatchdogSec"] == "15s"
    assert "bcm2835_wdt" in cat(MODULES).split("\n")
    assert _ini(cat(TIMESYNCD))["Time"]["SaveIntervalSec"] == "3600"
    sysctls = _sysctls(cat(ipv6.SYSCTL_FILE))
    assert sysctls["net/ipv6/conf/default/disable_ipv6"] == "1"
    assert sysctls["net/ipv6/conf/eth0/disable_ipv6"] == "1"
    # The kernel's watchdog drivers are in the image (i6300esb: QEMU virt; bcm2835: the Pi).
    modules = runner.run(["debugfs", "-R", "ls -p /usr/lib/modules", fs],
                         capture=True).stdout.decode()
    version = re.findall(r"/(\d+\.\d+\.\d+-[^/]+)/", modules)[0]
    drivers = runner.run(["debugfs", "-R",
                          f"ls -p /usr/lib/modules/{version}/kernel/drivers/watchdog", fs],
                         capture=True).stdout.decode()
    assert "bcm2835_wdt.ko" in drivers and "i6300esb.ko" in drivers
