"""`failberry boot-test`: boot an image under QEMU with the kernel and initrd from its own boot
partition, reach /health and SSH through user-mode networking, run `failberry status` as the
admin, and power off. The image itself is never written (QEMU's snapshot mode)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from failberry import config as config_mod
from failberry.config import Config
from failberry.errors import UsageError
from failberry.image import guestreport
from failberry.image.bootreport import BootReport, Console
from failberry.image.partimage import Partition, boot_and_root, require_image
from failberry.image.qemu import (
    BootFiles,
    BootTestError,
    Machine,
    kernel_arch,
    machine_for,
    qemu_argv,
)
from failberry.image.runner import Runner

LOG = logging.getLogger(__name__)

CONFIG_IN_IMAGE = "/etc/failberry/failberry.toml"
# How often /health is asked while the guest boots: the milestone is when it first answered,
# and a second between tries made it up to a second late (it was 1 s before issue 18's boot
# work; a refused try costs the guest one SYN and one RST).
HEALTH_POLL = 0.25
# Console lines that mark the boot's progress, in the order they appear.
@dataclass(frozen=True)
class BootTestOptions:
    """What to boot and how long to wait."""

    image: Path
    timeout: float = 300.0
    machine: str = "virt"
    ssh_key: Path | None = None
    # A kernel that prints nothing this long after QEMU starts never will: the wrong
    # emulator or machine for it (each prints its first line within seconds).
    kernel_silence: float = 20.0
    # --hang-kernel: after the checks, hang the guest kernel; the watchdog must reset it
    # within this many seconds of the panic (image/hangtest.py).
    hang_kernel: float | None = None
    # Seconds of idle disk writes to measure once the checks pass (0: none); commands to run
    # in the guest after that, their output shown.
    idle_window: float = 60.0
    execs: tuple[str, ...] = ()


def parse_config_txt(text: str) -> tuple[str, str]:
    """(kernel, initramfs) file names from a Raspberry Pi config.txt (defaults if absent)."""
    kernel = "kernel8.img"
    initrd = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if m := re.fullmatch(r"kernel\s*=\s*(\S+)", line):
            kernel = m.group(1)
        elif m := re.fullmatch(r"initramfs\s+(\S+)(\s+\S+)?", line):
            initrd = m.group(1)
    return kernel, initrd


def extract_boot(runner: Runner, image: Path, boot: Partition, dest: Path) -> BootFiles:
    """Kernel, initrd, cmdline.txt and DTBs out of the FAT partition (mtools, no mount)."""
    fat = f"{image}@@{boot.offset}"
    env = {"MTOOLS_SKIP_CHECK": "1"}

    def read(name: str) -> str:
        return runner.run(["mtype", "-i", fat, f"::{name}"], capture=True,
                          env=env).stdout.decode("utf-8", "replace")

    kernel_name, initrd_name = parse_config_txt(read("config.txt"))
    cmdline = read("cmdline.txt").strip()
    names = [kernel_name] + ([initrd_name] if initrd_name else [])
    runner.run(["mcopy", "-n", "-i", fat, *[f"::{n}" for n in names], dest], env=env)
    listing = runner.run(["mdir", "-b", "-i", fat, "::/"], capture=True, env=env).stdout
    dtbs = [n.strip().lstrip(":/") for n in listing.decode().splitlines()
            if n.strip().endswith(".dtb")]
    if dtbs:
        runner.run(["mcopy", "-n", "-i", fat, *[f"::{n}" for n in dtbs], dest], env=env)
    return BootFiles(dest / kernel_name, dest / initrd_name if initrd_name else None, cmdline,
                     dest)


def image_config(runner: Runner, image: Path, root: Partition) -> Config:
    """The failberry config inside the image's ext4 root (debugfs reads it without a mount)."""
    out = runner.run(["debugfs", "-R", f"cat {CONFIG_IN_IMAGE}", f"{image}?offset={root.offset}"],
                     capture=True)
    text = out.stdout.decode("utf-8", "replace")
    if not text.strip():
        raise BootTestError(f"{image}: no {CONFIG_IN_IMAGE} in the root file system; "
                            "was it built by `failberry build`?")
    return config_mod.parse(text, f"{image}:{CONFIG_IN_IMAGE}", Path("/"))


def free_port() -> int:
    """An unused loopback TCP port for a forward."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_health(port: int, timeout: float = 3.0) -> tuple[int, str] | None:
    """(HTTP status, body) of /health, or None while nothing answers."""
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read(4096).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def ssh_argv(key: Path, port: int, user: str, *extra: str) -> list[str]:
    """ssh to the guest through the forward, never asking questions or keeping host keys."""
    return ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes",
            *extra, f"{user}@127.0.0.1"]


def default_key(image: Path, cfg: Config) -> Path | None:
    """The key pair `failberry build` made beside the image when the config had none."""
    key = image.parent / f"{cfg.image.hostname}-admin_ed25519"
    return key if key.is_file() else None


def boot_test(opts: BootTestOptions, runner: Runner | None = None) -> BootReport:
    """Boot the image, check health and SSH, power off; the report says what happened."""
    runner = runner or Runner()
    image = opts.image.resolve()
    require_image(image, opts.image)
    parts = boot_and_root(image)
    cfg = image_config(runner, image, parts[1])
    key = opts.ssh_key or default_key(image, cfg)
    with tempfile.TemporaryDirectory(prefix="failberry-boot-test-") as tmp:
        files = extract_boot(runner, image, parts[0], Path(tmp))
        machine = machine_for(opts.machine, kernel_arch(files.kernel))
        if opts.hang_kernel is not None and (machine.pi_model or not machine.watchdog):
            raise UsageError(f"--hang-kernel: QEMU's {machine.name} ({machine.arch}) gives "
                             "this image's kernel no watchdog it drives; use an arm64 image "
                             "on --machine virt")
        if shutil.which(machine.emulator) is None:
            raise BootTestError(f"{machine.emulator} is not installed (Debian: qemu-system-arm)")
        size = image.stat().st_size
        if machine.pi_model and size & (size - 1):
            raise UsageError(f"{opts.image}: QEMU's {machine.name} needs an SD image whose size "
                             f"is a power of two, not {size} bytes")
        report = BootReport(f"{machine.name}, {machine.arch}")
        health_port, ssh_port = free_port(), free_port()
        console = Console(report)
        proc = runner.spawn(qemu_argv(machine, files, image, cfg,
                                      health_port=health_port, ssh_port=ssh_port,
                                      reboot=opts.hang_kernel is not None),
                            on_line=console.line)
        guest = _Guest(runner, proc, console, cfg, key, health_port, ssh_port, machine)
        try:
            _checks(guest, report, opts)
            if opts.hang_kernel is not None and report.ok and key is not None:
                from failberry.image.hangtest import guest_facts, hang_kernel

                ssh = ssh_argv(key, ssh_port, cfg.admin.user)
                facts = guest_facts(runner, ssh)
                hang = hang_kernel(runner, proc, report.console, ssh, limit=opts.hang_kernel)
                report.hang = (f"guest IPv6 outside lo: {facts.get('ipv6') or 'none'}; "
                               f"systemd-timesyncd {facts.get('timesyncd') or '?'}; "
                               f"disable_ipv6 {facts.get('disable_ipv6') or '?'}\n  "
                               + hang.line())
                report.failure = hang.failure
                Runner.stop(proc)  # the second boot proved the reset; no power-off to wait for
        finally:
            _power_off(guest, report)
    return report


@dataclass(frozen=True)
class _Guest:
    """The running QEMU and how to reach the guest."""

    runner: Runner
    proc: subprocess.Popen[bytes]
    console: Console
    cfg: Config
    key: Path | None
    health_port: int
    ssh_port: int
    machine: Machine


def _checks(guest: _Guest, report: BootReport, opts: BootTestOptions) -> None:
    runner, proc, console, cfg, key = (guest.runner, guest.proc, guest.console, guest.cfg,
                                       guest.key)
    health_port, ssh_port, timeout = guest.health_port, guest.ssh_port, opts.timeout
    deadline = time.monotonic() + timeout
    # QEMU's Pi 2 and Pi 3 have no Ethernet: on the real boards eth0 is a USB chip QEMU lacks,
    # and its USB network device comes up as usb0, which the image does not configure. There
    # failberryd's own log line on the console is the proof, and /health is not asked (each
    # try only makes QEMU knock on a network device the guest never brings up).
    pi = guest.machine.pi_model
    awaited = "failberryd's 'supervisor running' line" if pi else "/health"
    while True:
        if proc.poll() is not None:
            report.failure = f"QEMU exited with status {proc.returncode} before {awaited} showed"
            return
        answer = None if pi else get_health(health_port)
        if answer is not None:
            report.health_status, report.health = answer[0], answer[1].strip()
            console.mark("/health answered")
            break
        if time.monotonic() > deadline:
            report.failure = (f"{awaited} did not show within {timeout:g}s" if pi
                              else f"/health did not answer within {timeout:g}s")
            return
        if console.crash:
            report.failure = f"the guest kernel crashed: {console.crash}"
            return
        if console.silent_for(opts.kernel_silence):
            report.failure = (f"the kernel printed nothing in {opts.kernel_silence:g} s: wrong "
                              "machine or kernel for this image?")
            return
        if pi and report.seconds_to("failberryd") is not None:
            report.note = (f"network checks skipped: QEMU's {guest.machine.name} has no eth0 "
                           "(its USB network device is usb0); the boot is proven on the console")
            return
        time.sleep(HEALTH_POLL)
    try:
        json.loads(report.health)
    except ValueError:
        report.failure = f"/health answered HTTP {report.health_status} without a JSON body"
        return
    if key is None:
        report.failure = "no SSH key to log in with (give --ssh-key)"
        return
    # The config is root's (0600): the admin runs `failberry status` through sudo, which is
    # passwordless for a key-only admin; a plain run is the fallback when sudo asks.
    status = ["if sudo -n true 2>/dev/null; then sudo -n failberry status; "
              "else failberry status; fi"]
    while True:
        res = runner.run([*ssh_argv(key, ssh_port, cfg.admin.user), *status],
                         capture=True, check=False, timeout=60)
        # 255 is ssh's own failure (sshd not up yet, key refused); anything else is the
        # status command's exit, which may report a failure (no modem under QEMU).
        if res.returncode != 255:
            report.status_exit = res.returncode
            report.status_output = (res.stdout.decode("utf-8", "replace")
                                    + res.stderr_tail).strip()
            console.mark("ssh login")
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            report.failure = f"SSH login as {cfg.admin.user} failed: {res.stderr_tail[-300:]}"
            return
        time.sleep(2)
    res = runner.run([*ssh_argv(key, ssh_port, cfg.admin.user, "-o", "PubkeyAuthentication=no",
                                "-o", "PreferredAuthentications=password,"
                                "keyboard-interactive"), "true"],
                     capture=True, check=False, timeout=60)
    offered = re.search(r"Permission denied \(([^)]*)\)", res.stderr_tail)
    if res.returncode == 0:
        report.failure = "a login without the key succeeded"
    elif offered and not {"password", "keyboard-interactive"} & set(offered.group(1).split(",")):
        report.password_login = f"refused (server offers only: {offered.group(1)})"
    else:
        report.failure = f"password login not clearly refused: {res.stderr_tail[-200:]}"
        return
    _guest_report(guest, report, opts)


def _guest_report(guest: _Guest, report: BootReport, opts: BootTestOptions) -> None:
    """Watchdog, critical chain, start to /health, idle writes, and --exec, over SSH."""
    key = guest.key
    assert key is not None

    def ssh(argv: list[str], timeout: float) -> tuple[int, str, str]:
        res = guest.runner.run([*ssh_argv(key, guest.ssh_port, guest.cfg.admin.user), *argv],
                               capture=True, check=False, timeout=timeout)
        return res.returncode, res.stdout.decode("utf-8", "replace"), res.stderr_tail

    health = report.seconds_to("/health answered")
    host_health = None if health is None else guest.console.started + health
    report.guest = guestreport.collect(ssh, host_health=host_health,
                                       idle_window=opts.idle_window, execs=opts.execs)
    failed = [f"{cmd!r} exited {code}" for cmd, code, _ in report.guest.execs if code != 0]
    if failed:
        report.failure = "--exec: " + ", ".join(failed)


def _power_off(guest: _Guest, report: BootReport) -> None:
    proc = guest.proc
    if proc.poll() is None and guest.key is not None and report.status_exit is not None:
        guest.runner.run([*ssh_argv(guest.key, guest.ssh_port, guest.cfg.admin.user), "sudo",
                          "-n", "systemctl", "poweroff"], check=False, timeout=30)
        try:
            proc.wait(timeout=60)
            LOG.info("guest powered off")
        except subprocess.TimeoutExpired:
            LOG.info("guest did not power off in 60s; stopping QEMU")
    Runner.stop(proc)
