"""QEMU command lines for `boot-test`: which emulator and machine boot an image's kernel (by
its architecture, read from the kernel file itself), the console, and the guest's user-mode
network, isolated from everything but the forwards the test uses."""

from __future__ import annotations

import gzip
import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

from failberry.config import Config
from failberry.errors import FailberryError, UsageError


class BootTestError(FailberryError):
    """The image cannot be boot-tested (no kernel in it, QEMU missing, ...)."""


@dataclass(frozen=True)
class BootFiles:
    """What the image's boot partition says to boot, extracted to the host."""

    kernel: Path
    initrd: Path | None
    cmdline: str
    dtb_dir: Path


@dataclass(frozen=True)
class Machine:
    """One QEMU machine that boots one architecture's kernel."""

    name: str
    arch: str
    emulator: str
    args: tuple[str, ...]
    console: str
    # QEMU's Raspberry Pi models: the Pi's own device tree from the boot partition, an SD
    # card (its size a power of two), and no Ethernet (on a real Pi 2 and 3 it is a USB chip
    # QEMU lacks), so the boot is proven on the console.
    dtb: str = ""
    serial: tuple[str, ...] = ("-serial", "stdio")
    # The watchdog device systemd's RuntimeWatchdogSec= drives in the guest: the arm64 Debian
    # kernel has the i6300esb PCI watchdog's driver (a module udev loads from its PCI id),
    # the armmp kernel has none of QEMU's watchdogs, and the Pi models emulate no watchdog.
    watchdog: tuple[str, ...] = ()

    @property
    def pi_model(self) -> bool:
        """A Raspberry Pi model rather than QEMU's generic virt board."""
        return bool(self.dtb)


MACHINES = (
    Machine("virt", "arm64", "qemu-system-aarch64",
            ("-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"), "ttyAMA0",
            watchdog=("-device", "i6300esb")),
    # highmem=off: the armmp kernel has no LPAE, and with highmem QEMU puts the PCI
    # configuration space above 4 GiB, where it cannot find the virtio disk.
    Machine("virt", "armhf", "qemu-system-arm",
            ("-M", "virt,highmem=off", "-cpu", "cortex-a15", "-smp", "2", "-m", "1024"),
            "ttyAMA0"),
    # The Pi 3's Linux console is the mini UART, QEMU's second serial port.
    Machine("raspi3b", "arm64", "qemu-system-aarch64", ("-M", "raspi3b", "-m", "1024"),
            "ttyS1,115200", dtb="bcm2837-rpi-3-b.dtb",
            serial=("-serial", "null", "-serial", "stdio")),
    # The Pi 2's console is its PL011 UART, QEMU's first serial port.
    Machine("raspi2b", "armhf", "qemu-system-arm", ("-M", "raspi2b", "-m", "1024"),
            "ttyAMA0,115200", dtb="bcm2836-rpi-2-b.dtb"),
)
MACHINE_NAMES = tuple(dict.fromkeys(m.name for m in MACHINES))
BOARDS_OF_ARCH = {"arm64": "rpi3, rpi4, zero2w", "armhf": "rpi2"}


def kernel_arch(kernel: Path) -> str:
    """The Debian architecture a kernel file is for, from its boot header: an arm64 `Image`
    (gzipped or not) carries "ARM\\x64" at byte 56, a 32-bit ARM zImage the magic 0x016f2818
    at byte 36."""
    with kernel.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"\x1f\x8b"):  # a gzipped Image (Image.gz), which QEMU unpacks too
        with gzip.open(kernel, "rb") as g:
            head = g.read(64)
    if len(head) == 64 and head[56:60] == b"ARM\x64":
        return "arm64"
    if len(head) >= 40 and struct.unpack_from("<I", head, 36)[0] == 0x016F2818:
        return "armhf"
    raise BootTestError(f"{kernel.name}: neither an arm64 Image nor an ARM zImage; "
                        "cannot tell which QEMU boots it")


def machine_for(name: str, arch: str) -> Machine:
    """The machine `--machine NAME` means for a kernel of `arch`; a mismatch is a UsageError
    that says which machines boot this image."""
    if name not in MACHINE_NAMES:
        raise UsageError(f"--machine: {name!r} is not one of: {', '.join(MACHINE_NAMES)}")
    for machine in MACHINES:
        if machine.name == name and machine.arch == arch:
            return machine
    fits = [m.name for m in MACHINES if m.arch == arch]
    other = next(m.arch for m in MACHINES if m.name == name)
    raise UsageError(f"--machine {name} boots {other} kernels ({BOARDS_OF_ARCH[other]}), "
                     f"but this image's kernel is {arch} (board {BOARDS_OF_ARCH[arch]}); "
                     f"use --machine {' or '.join(fits)}")


NO_PI_WATCHDOG = "modprobe.blacklist=bcm2835_wdt"


def virt_cmdline(pi_cmdline: str, console: str, *, journal_to_console: bool = False) -> str:
    """The Pi's kernel command line with its consoles replaced by QEMU's serial port.

    The boot timeline is read from systemd's status lines on the console. On the Pi models,
    with no network to ask /health, failberryd's own log line forwarded from the journal is
    the proof that it runs (off elsewhere: a busy emulated serial console slows the boot)."""
    words = [w for w in pi_cmdline.split()
             if not w.startswith(("console=", "cma=", "earlycon"))]
    extra = ["systemd.journald.forward_to_console=1"] if journal_to_console else []
    # earlycon (the UART the device tree's stdout-path names): the kernel's first line shows
    # at once, not when the UART's driver binds (on raspi2b 7 s of kernel time, half a
    # minute on a busy host), so a silent kernel means a wrong one.
    return " ".join([*words, "systemd.show_status=1", *extra, "earlycon",
                     f"console={console}"])


def slirp_net(cfg: Config) -> tuple[str, str, str]:
    """(network, QEMU's own host address, the Pi's address) for user-mode networking: the
    virtual LAN is the configured one, so the image's static address is reachable."""
    iface = ipaddress.ip_interface(cfg.lan.address)
    net = iface.network
    pi = iface.ip
    hosts = [h for h in (net.network_address + 1, net.broadcast_address - 1) if h != pi]
    return str(net), str(hosts[0]), str(pi)


def netdev(cfg: Config, *, health_port: int, ssh_port: int) -> str:
    """The guest's user-mode network: restrict=on isolates it (nothing it sends leaves QEMU,
    so time sync, DNS and probes reach no one outside), and the two forwards from loopback,
    which restrict keeps, reach its health port and SSH. IPv4 only: the image's LAN has no
    IPv6, and QEMU's router advertisements to a guest whose USB network is not up yet fill
    the console with "Failed to send packet"."""
    net, host, pi = slirp_net(cfg)
    return (f"user,id=lan,net={net},host={host},restrict=on,ipv6=off,"
            f"hostfwd=tcp:127.0.0.1:{health_port}-{pi}:{cfg.health.port},"
            f"hostfwd=tcp:127.0.0.1:{ssh_port}-{pi}:22")


def qemu_argv(machine: Machine, files: BootFiles, image: Path, cfg: Config, *,
              health_port: int, ssh_port: int, reboot: bool = False) -> list[str]:
    """The QEMU command line that boots `image` on `machine`. A guest reboot ends QEMU
    (-no-reboot) unless `reboot` (--hang-kernel): then the guest gets the machine's watchdog,
    and its reset boots the guest again. Only then: QEMU's watchdog counts host time, and on
    a busy host a starved guest misses systemd's pings (seen: a plain boot-test reset 150 s
    into a boot beside another QEMU), which would fail a boot test for the host's load."""
    lan = netdev(cfg, health_port=health_port, ssh_port=ssh_port)
    argv = [machine.emulator, *machine.args, "-display", "none", "-monitor", "none",
            *(machine.watchdog if reboot else ["-no-reboot"]),
            "-kernel", str(files.kernel)]
    if files.initrd:
        argv += ["-initrd", str(files.initrd)]
    if not machine.pi_model:
        return [*argv, *machine.serial, "-append", virt_cmdline(files.cmdline, machine.console),
                "-drive", f"if=none,id=disk,format=raw,file={image},snapshot=on",
                "-device", "virtio-blk-pci,drive=disk",
                "-netdev", lan, "-device", "virtio-net-pci,netdev=lan,romfile="]
    dtb = files.dtb_dir / machine.dtb
    if not dtb.is_file():
        raise BootTestError(f"{image}: no {machine.dtb} in the boot partition; "
                            f"--machine {machine.name} needs the Pi's device tree")
    # QEMU's bcm2835 power manager resets the machine at the first write that arms the
    # SoC watchdog (the countdown is not emulated): systemd's RuntimeWatchdogSec= would
    # reset every boot as soon as bcm2835_wdt binds. The real board's watchdog counts; here
    # its driver stays unloaded.
    cmdline = virt_cmdline(files.cmdline, machine.console, journal_to_console=True)
    return [*argv, "-dtb", str(dtb), *machine.serial,
            "-append", f"{cmdline} {NO_PI_WATCHDOG}",
            "-drive", f"if=sd,format=raw,file={image},snapshot=on",
            "-usb", "-device", "usb-net,netdev=lan", "-netdev", lan]
