"""The build pipeline and boot test. Unit tests for the pipeline, the command runner and the
pure parts; real mke2fs/mkfs.vfat/sfdisk for reproducible assembly; and the slow tier, which
builds an rpi3 image from a test config, boots it under QEMU, logs in with the config's key,
rebuilds it byte-identically, and interrupts a build."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import upkeep_guest
from conftest import ROOT, SSH_KEY, run_cli
from failberry import config
from failberry.errors import CommandFailed, UsageError
from failberry.image import assemble, boottest, commands, partimage, pipeline, qemu, rootfs
from failberry.image.runner import Runner, ToolMissing
from failberry.image.sources import INSTALLED
from slow_image import CACHE, build_image

# ----------------------------------------------------------------------------- pipeline


def test_steps_run_in_order_and_teardowns_in_reverse() -> None:
    seen: list[str] = []
    steps = [pipeline.Step("make_a", lambda c: c.append("a"), lambda c: c.append("~a")),
             pipeline.Step("make_b", lambda c: c.append("b"), lambda c: c.append("~b")),
             pipeline.Step("use_both", lambda c: c.append("use"))]
    timeline = pipeline.run_steps(steps, seen)
    assert seen == ["a", "b", "use", "~b", "~a"]
    assert [name for name, _ in timeline.steps] == ["make_a", "make_b", "use_both"]


def test_a_failing_step_still_runs_every_registered_teardown() -> None:
    seen: list[str] = []

    def fail(c: list[str]) -> None:
        c.append("b")
        raise CommandFailed(["false"], 1)

    def bad_teardown(c: list[str]) -> None:
        c.append("~b")
        raise OSError("teardown trouble")

    steps = [pipeline.Step("make_a", lambda c: c.append("a"), lambda c: c.append("~a")),
             pipeline.Step("make_b", fail, bad_teardown),
             pipeline.Step("never", lambda c: c.append("never"))]
    with pytest.raises(CommandFailed):
        pipeline.run_steps(steps, seen)
    # The failing step's own teardown runs (it may have half-made its resource), a failing
    # teardown does not stop the next one, and later steps never start.
    assert seen == ["a", "b", "~b", "~a"]


def test_duplicate_step_names_are_refused() -> None:
    steps = [pipeline.Step("same", lambda c: None), pipeline.Step("same", lambda c: None)]
    with pytest.raises(ValueError, match="same"):
        pipeline.run_steps(steps, None)


# ------------------------------------------------------------------------------- runner


def test_failed_command_names_argv_status_and_stderr_tail() -> None:
    with pytest.raises(CommandFailed) as info:
        Runner().run(["sh", "-c", "echo first >&2; echo 'the last words' >&2; exit 3", "x y"])
    err = info.value
    assert err.returncode == 3
    assert "the last words" in err.stderr_tail
    assert "sh -c" in str(err) and "'x y'" in str(err) and "status 3" in str(err)
    assert str(err).endswith("the last words")


def test_killed_command_reports_the_signal() -> None:
    with pytest.raises(CommandFailed, match="killed by signal 9"):
        Runner().run(["sh", "-c", "kill -9 $$"])


def test_missing_program_is_one_line_naming_it_not_a_traceback() -> None:
    with pytest.raises(ToolMissing, match="not installed: failberry-no-such-program; run"):
        Runner().run(["failberry-no-such-program"], check=False)


@pytest.mark.timeout(30)
def test_a_command_past_its_timeout_is_stopped_and_fails_saying_so() -> None:
    started = time.monotonic()
    with pytest.raises(CommandFailed, match=r"timed out after 0\.5s") as info:
        Runner().run(["sh", "-c", "echo started >&2; exec sleep 60"], timeout=0.5, capture=True)
    assert "started" in info.value.stderr_tail
    assert time.monotonic() - started < 20  # stopped, not waited out


def test_whole_stderr_keeps_every_line_the_tail_only_the_last() -> None:
    script = "for i in $(seq 100); do echo line$i >&2; done"
    whole = Runner().run(["sh", "-c", script], whole_stderr=True)
    assert whole.stderr.splitlines() == [f"line{i}" for i in range(1, 101)]
    assert whole.stderr_tail.splitlines() == [f"line{i}" for i in range(61, 101)]
    tail = Runner().run(["sh", "-c", script])
    assert tail.stderr == tail.stderr_tail == whole.stderr_tail


def test_stderr_lines_reach_the_progress_callback_and_stdout_is_captured() -> None:
    lines: list[str] = []
    res = Runner().run(["sh", "-c", "echo out; echo 'Setting up x' >&2; echo 'Unpacking y' >&2"],
                       capture=True, on_line=lines.append)
    assert res.stdout == b"out\n"
    assert lines == ["Setting up x", "Unpacking y"]


@pytest.mark.timeout(30)
def test_large_input_and_output_at_once_do_not_deadlock() -> None:
    data = b"x" * (4 * 1024 * 1024)  # far more than a pipe buffer each way
    res = Runner().run(["cat"], stdin=data, capture=True)
    assert res.stdout == data


def test_install_progress_counts_packages() -> None:
    t = [0.0]
    progress = rootfs.InstallProgress(clock=lambda: t[0])
    for line in ["Unpacking a (1)", "Unpacking b (2)", "Setting up a (1)", "noise"]:
        progress.line(line)
    assert (progress.unpacked, progress.configured) == (2, 1)


def test_the_hooks_findings_reach_the_build_log(caplog: pytest.LogCaptureFixture) -> None:
    progress = rootfs.InstallProgress(clock=lambda: 0.0)
    with caplog.at_level("INFO", logger="failberry.image.rootfs"):
        progress.line("failberry: initramfs initrd.img-6.1.0-50-armmp has every required module")
    assert caplog.messages == ["initramfs initrd.img-6.1.0-50-armmp has every required module"]


# ---------------------------------------------------------------------------- pure parts

MINIMAL = f"""
[admin]
ssh_authorized_keys = ["{SSH_KEY}"]
[modem]
apn = "internet"
"""


def _cfg(extra: str = "") -> config.Config:
    return config.parse(MINIMAL + extra)


def test_base_key_follows_packages_and_board_arch_but_not_the_rest_of_the_config() -> None:
    recipe = INSTALLED.recipe
    plain = rootfs.base_spec(_cfg(), recipe)
    other_host = rootfs.base_spec(_cfg('[image]\nhostname = "other"\n'), recipe)
    extra = rootfs.base_spec(_cfg('[image]\nextra_packages = ["tcpdump"]\n'), recipe)
    armhf = rootfs.base_spec(_cfg('[image]\nboard = "rpi2"\n'), recipe)
    assert plain.digest() == other_host.digest()
    assert len({plain.digest(), extra.digest(), armhf.digest()}) == 3
    assert "tcpdump" in extra.packages and "linux-image-arm64" in plain.packages
    assert "linux-image-armmp" in armhf.packages
    assert 'ROOTPART="LABEL=fbroot"' in plain.file("raspi-firmware")
    assert "ttyS1,115200" in plain.file("raspi-firmware")
    assert "ttyAMA0,115200" in armhf.file("raspi-firmware")
    assert "LABEL=FBBOOT" in plain.file("fstab")


def _check_initramfs(tmp_path: Path, listing: str, builtin: str) -> subprocess.CompletedProcess[
        str]:
    """hooks/check-initramfs.sh on an lsinitramfs listing, with the repository's module list
    (as uploaded into the image: names only) and a kernel's modules.builtin."""
    modules = tmp_path / "modules"
    modules.write_text("\n".join(rootfs.read_list(INSTALLED.recipe / "initramfs-modules.txt")))
    (tmp_path / "modules.builtin").write_text(builtin)
    return subprocess.run(["sh", INSTALLED.recipe / "hooks" / "check-initramfs.sh", modules,
                           tmp_path / "modules.builtin", "initrd.img-6.1.0-50-armmp"],
                          input=listing, capture_output=True, text=True)


# What an armmp (Pi 2) kernel builds in, and what its initramfs holds with the module list.
ARMMP_BUILTIN = "kernel/drivers/mmc/core/mmc_block.ko\nkernel/drivers/dma/bcm2835-dma.ko\n"
ARMMP_INITRAMFS = "".join(
    f"usr/lib/modules/6.1.0-50-armmp/kernel/{path}.ko\n" for path in (
        "drivers/mmc/host/bcm2835", "drivers/mmc/host/sdhci-iproc", "drivers/mmc/host/sdhci",
        "drivers/mmc/host/sdhci-pltfm", "fs/ext4/ext4", "fs/jbd2/jbd2", "fs/mbcache",
        "drivers/virtio/virtio_pci", "drivers/virtio/virtio_mmio", "drivers/block/virtio_blk",
        "drivers/net/virtio_net", "drivers/net/net_failover"))


def test_an_initramfs_with_every_listed_module_passes_the_build_check(tmp_path: Path) -> None:
    res = _check_initramfs(tmp_path, "usr/lib/modules/6.1.0-50-armmp/modules.dep\n"
                           + ARMMP_INITRAMFS, ARMMP_BUILTIN)
    assert res.returncode == 0, res.stderr
    assert "has every required module" in res.stderr


def test_an_initramfs_without_the_pi_2_sd_driver_fails_the_build_naming_it(
        tmp_path: Path) -> None:
    listing = "".join(line + "\n" for line in ARMMP_INITRAMFS.splitlines()
                      if not line.endswith(("/bcm2835.ko", "/ext4.ko")))
    res = _check_initramfs(tmp_path, listing, ARMMP_BUILTIN)
    assert res.returncode == 1
    line = res.stderr.strip()
    assert line.startswith("failberry: initramfs initrd.img-6.1.0-50-armmp lacks required "
                           "modules: bcm2835, ext4 (")
    # The build turns that line into its own one-line error.
    tail = f"I: running customize hook\n{line}\nE: hook failed\nI: removing tempdir"
    assert rootfs.initramfs_problem(tail).startswith("initramfs initrd.img-6.1.0-50-armmp "
                                                     "lacks required modules: bcm2835, ext4")
    assert rootfs.initramfs_problem("E: something else failed") == ""
    # A built-in module needs no file; compressed module files count; - and _ are one.
    res = _check_initramfs(tmp_path, listing.replace("sdhci-iproc.ko", "sdhci_iproc.ko.xz"),
                           ARMMP_BUILTIN + "kernel/drivers/mmc/host/bcm2835.ko\n"
                           "kernel/fs/ext4/ext4.ko\n")
    assert res.returncode == 0, res.stderr


def test_the_module_list_holds_what_a_pi_2_and_qemu_virt_need_to_find_the_root() -> None:
    names = set(rootfs.read_list(INSTALLED.recipe / "initramfs-modules.txt"))
    # The Pi 2's SD card is on SDHOST (bcm2835), the only SD controller its device tree
    # enables; ext4 is the root; QEMU virt's disk is virtio over PCI.
    assert {"bcm2835", "mmc_block", "ext4", "virtio_pci", "virtio_blk"} <= names


def test_every_image_package_is_a_valid_debian_name() -> None:
    names = rootfs.read_list(INSTALLED.recipe / "packages.txt")
    assert {"openssh-server", "ppp", "iptables", "raspi-firmware", "python3-iptables"} <= set(
        names)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", n) for n in names)


def test_layout_fits_the_configured_size_and_refuses_a_tiny_one() -> None:
    layout = assemble.plan_layout(1024 ** 3)
    assert layout.boot_start % (1024 * 1024) == 0
    assert layout.root_start == layout.boot_start + layout.boot_size
    assert layout.root_start + layout.root_size == 1024 ** 3
    with pytest.raises(assemble.ImageTooSmall, match=r"image\.size"):
        assemble.plan_layout(200 * 1024 * 1024)


def test_ids_are_derived_from_the_seed() -> None:
    a, b, c = assemble.derive_ids("x"), assemble.derive_ids("x"), assemble.derive_ids("y")
    assert a == b and a != c
    assert re.fullmatch(r"0x[0-9a-f]{8}", a.disk_id)
    assert re.fullmatch(r"[0-9A-F]{8}", a.boot_volid)


def test_config_txt_and_cmdline_for_qemu() -> None:
    text = ("# generated\narm_64bit=1\nenable_uart=1\nkernel=vmlinuz-6.1.0-50-arm64\n"
            "initramfs initrd.img-6.1.0-50-arm64 followkernel\n")
    assert boottest.parse_config_txt(text) == ("vmlinuz-6.1.0-50-arm64",
                                               "initrd.img-6.1.0-50-arm64")
    pi = "console=tty0 console=ttyS1,115200 root=LABEL=fbroot rw net.ifnames=0 cma=64M rootwait"
    assert qemu.virt_cmdline(pi, "ttyAMA0") == (
        "root=LABEL=fbroot rw net.ifnames=0 rootwait systemd.show_status=1 earlycon "
        "console=ttyAMA0")


def test_user_networking_puts_qemu_on_the_configured_lan() -> None:
    assert qemu.slirp_net(_cfg()) == ("192.168.1.0/24", "192.168.1.1", "192.168.1.2")
    cfg = _cfg('[lan]\naddress = "10.9.0.1/16"\n')
    assert qemu.slirp_net(cfg) == ("10.9.0.0/16", "10.9.255.254", "10.9.0.1")


def _boot_files(where: Path) -> qemu.BootFiles:
    for dtb in ("bcm2837-rpi-3-b.dtb", "bcm2836-rpi-2-b.dtb"):
        (where / dtb).write_bytes(b"")
    return qemu.BootFiles(where / "vmlinuz", where / "initrd",
                          "console=ttyS1,115200 root=LABEL=fbroot rw", where)


def test_qemu_command_lines_forward_health_and_ssh_to_the_configured_address(
        tmp_path: Path) -> None:
    files = _boot_files(tmp_path)
    cfg = _cfg('[health]\nport = 9100\n')

    def argv(name: str, arch: str) -> str:
        return " ".join(qemu.qemu_argv(qemu.machine_for(name, arch), files, tmp_path / "x.img",
                                       cfg, health_port=4000, ssh_port=4001))

    virt = argv("virt", "arm64")
    assert virt.startswith("qemu-system-aarch64 -M virt -cpu cortex-a72")
    assert "console=ttyAMA0" in virt and "ttyS1" not in virt
    assert "hostfwd=tcp:127.0.0.1:4000-192.168.1.2:9100" in virt
    assert "hostfwd=tcp:127.0.0.1:4001-192.168.1.2:22" in virt
    assert "snapshot=on" in virt  # the image is never written
    pi = argv("raspi3b", "arm64")
    assert "-M raspi3b" in pi and "bcm2837-rpi-3-b.dtb" in pi and "console=ttyS1,115200" in pi
    assert "systemd.journald.forward_to_console=1" in pi
    assert "-serial null -serial stdio" in pi  # the Linux console is the second UART
    virt32 = argv("virt", "armhf")
    assert virt32.startswith("qemu-system-arm -M virt,highmem=off -cpu cortex-a15")
    assert "virtio-blk-pci" in virt32 and "console=ttyAMA0" in virt32
    pi2 = argv("raspi2b", "armhf")
    assert pi2.startswith("qemu-system-arm -M raspi2b")
    assert "bcm2836-rpi-2-b.dtb" in pi2 and "console=ttyAMA0,115200" in pi2
    assert "-serial stdio" in pi2 and "-serial null" not in pi2  # the Pi 2's PL011
    assert "if=sd" in pi2 and "systemd.journald.forward_to_console=1" in pi2


def test_every_machine_isolates_the_guest_but_keeps_the_forwards(tmp_path: Path) -> None:
    files = _boot_files(tmp_path)
    for machine in qemu.MACHINES:
        argv = qemu.qemu_argv(machine, files, tmp_path / "x.img", _cfg(), health_port=4000,
                              ssh_port=4001)
        netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
        assert len(netdevs) == 1, machine
        options = netdevs[0].split(",")
        assert "restrict=on" in options and "restrict=off" not in options, machine
        assert "hostfwd=tcp:127.0.0.1:4000-192.168.1.2:9000" in options, machine
        assert "hostfwd=tcp:127.0.0.1:4001-192.168.1.2:22" in options, machine
        assert not any(a.startswith("-nic") or a == "-net" for a in argv), machine


def _kernel(where: Path, arch: str) -> Path:
    head = bytearray(64)
    if arch == "arm64":
        head[56:60] = b"ARM\x64"
    elif arch == "armhf":
        head[36:40] = (0x016F2818).to_bytes(4, "little")
    path = where / f"vmlinuz-{arch}"
    path.write_bytes(bytes(head) + b"\0" * 1024)
    return path


def test_the_kernel_file_says_which_emulator_boots_it(tmp_path: Path) -> None:
    assert qemu.kernel_arch(_kernel(tmp_path, "arm64")) == "arm64"
    assert qemu.kernel_arch(_kernel(tmp_path, "armhf")) == "armhf"
    packed = tmp_path / "vmlinuz-gz"
    packed.write_bytes(gzip.compress(_kernel(tmp_path, "arm64").read_bytes()))
    assert qemu.kernel_arch(packed) == "arm64"
    with pytest.raises(qemu.BootTestError, match="neither an arm64 Image nor an ARM zImage"):
        qemu.kernel_arch(_kernel(tmp_path, "other"))
    assert qemu.machine_for("virt", "armhf").emulator == "qemu-system-arm"
    assert qemu.machine_for("virt", "arm64").emulator == "qemu-system-aarch64"


def test_a_board_and_machine_mismatch_is_a_clear_usage_error() -> None:
    with pytest.raises(UsageError, match=r"--machine raspi3b boots arm64 kernels .* this "
                       r"image's kernel is armhf \(board rpi2\); use --machine virt or raspi2b"):
        qemu.machine_for("raspi3b", "armhf")
    with pytest.raises(UsageError, match=r"kernel is arm64 .*use --machine virt or raspi3b"):
        qemu.machine_for("raspi2b", "arm64")
    with pytest.raises(UsageError, match="not one of: virt, raspi3b, raspi2b"):
        qemu.machine_for("raspi4b", "arm64")


def test_only_the_supervisors_own_line_proves_failberryd_runs() -> None:
    console = boottest.Console(boottest.BootReport("raspi2b"))
    console.line("         Starting failberryd.servic…ink, failover, health endpoint)...")
    console.line("[  200.154327] systemd[1]: Starting failberryd.service - failberry supervisor")
    assert console.report.seconds_to("failberryd starting") is not None
    assert console.report.seconds_to("failberryd") is None
    console.line("[  OK  ] Started failberryd.service - failberry supervisor (mobile backup")
    assert console.report.seconds_to("failberryd started") is not None
    assert console.report.seconds_to("failberryd") is None
    console.line("[  230.1] failberryd[312]: failberry.supervisor: supervisor running "
                 "(failberry 0.1.0, mode sidecar, watchdog 30s)")
    assert console.report.seconds_to("failberryd") is not None


def test_a_kernel_crash_on_the_console_is_noticed() -> None:
    console = boottest.Console(boottest.BootReport("raspi2b"))
    console.line("[   99.954748] sdhost-bcm2835 3f202000.mmc: timeout waiting for hardware "
                 "interrupt.")
    assert console.crash == ""
    console.line("[  100.014517] Unable to handle kernel NULL pointer dereference at virtual "
                 "address 00000014")
    console.line("[  100.020556] Internal error: Oops: 5 [#1] SMP ARM")
    assert console.crash.startswith("[  100.014517] Unable to handle kernel NULL pointer")


def test_a_silent_kernel_is_noticed_after_the_limit_and_a_talking_one_is_not() -> None:
    now = [100.0]
    console = boottest.Console(boottest.BootReport("virt"), clock=lambda: now[0])
    console.line("qemu-system-arm: warning: nothing to see")  # QEMU's own output
    now[0] += 19.9
    assert not console.silent_for(20)
    now[0] += 0.2
    assert console.silent_for(20)
    console.line("[    0.000000] Booting Linux on physical CPU 0x0")
    assert not console.silent_for(20)
    assert console.report.seconds_to("kernel") == pytest.approx(20.1)


def test_boot_report_lists_the_console_only_on_failure() -> None:
    report = boottest.BootReport("virt", milestones=[("kernel", 1.0)], console=["hello"])
    assert "hello" not in report.render() and report.ok
    report.failure = "nothing answered"
    assert "| hello" in report.render() and not report.ok


def test_a_failed_boot_ends_with_failberrys_lines_even_when_the_tail_is_noise(
        tmp_path: Path) -> None:
    why = "[  387.9] systemd[1]: failberryd.service: Failed with result 'exit-code'."
    noise = [f"[  {400 + i}.0] usb 1-1: device descriptor read/64, error -71"
             for i in range(200)]
    report = boottest.BootReport("raspi2b", console=["[  1.0] Booting Linux", why, *noise],
                                 failure="failberryd's line did not show")
    text = report.render()
    assert why not in text.split("console (last")[1].split("console lines about")[0]
    assert text.splitlines()[-2:] == [
        "  console lines about failberry and failures (1, last 40 shown):", f"    ! {why}"]
    report.write_console(tmp_path / "console.txt")
    assert (tmp_path / "console.txt").read_text().splitlines() == report.console


# ------------------------------------------------------------- reproducible assembly (real)


def _tree(base: Path) -> Path:
    root = base / "root"
    (root / "etc" / "failberry").mkdir(parents=True)
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("fb\n")
    secret = root / "etc" / "failberry" / "failberry.toml"
    secret.write_text("[modem]\napn = 'x'\n")
    secret.chmod(0o600)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(os.urandom(0) + b"#!/bin/sh\n")
    (root / "usr" / "bin" / "link").symlink_to("tool")
    (root / "bin").symlink_to("usr/bin")  # debugfs paths would follow it to its target
    (root / "boot" / "firmware" / "config.txt").write_text("kernel=vmlinuz-x\n")
    (root / "boot" / "firmware" / "cmdline.txt").write_text("root=LABEL=fbroot\n")
    return root


@pytest.mark.root
@pytest.mark.timeout(120)
def test_assembly_is_byte_identical_for_the_same_inputs(tmp_path: Path) -> None:
    runner = Runner()
    layout = assemble.plan_layout(400 * 1024 * 1024)
    ids = assemble.derive_ids("seed")
    digests = []
    for n in (1, 2):
        # A fresh tree each time: other inode numbers, ctimes and directory hash order.
        root = _tree(tmp_path / str(n))
        boot = tmp_path / str(n) / "boot"
        assemble.split_boot(root, boot)
        assemble.clamp_times(root, 1_700_000_000)
        assemble.clamp_times(boot, 1_700_000_000)
        out = tmp_path / f"{n}.img"
        assemble.make_image(runner, out, layout, ids, boot=boot, root=root, epoch=1_700_000_000)
        digests.append(assemble.sha256_file(out))
        time.sleep(1.1)  # a later wall clock for the second build
    assert digests[0] == digests[1]
    img = tmp_path / "1.img"
    parts = partimage.read_mbr(img)
    assert [p.offset for p in parts] == [layout.boot_start, layout.root_start]
    stat = runner.run(["debugfs", "-R", "stat /etc/failberry/failberry.toml",
                       f"{img}?offset={layout.root_start}"], capture=True).stdout.decode()
    assert re.search(r"Mode:\s+0600", stat)
    assert "ctime: 0x6553f100" in stat  # 1_700_000_000
    fat = runner.run(["mtype", "-i", f"{img}@@{layout.boot_start}", "::cmdline.txt"],
                     capture=True, env={"MTOOLS_SKIP_CHECK": "1"}).stdout
    assert fat == b"root=LABEL=fbroot\n"


@pytest.mark.root
@pytest.mark.timeout(60)
def test_a_root_tree_too_big_for_the_image_is_refused_with_the_numbers(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    with (root / "big").open("wb") as f:
        f.truncate(400 * 1024 * 1024)
    layout = assemble.plan_layout(400 * 1024 * 1024)
    with pytest.raises(assemble.ImageTooSmall, match=r"raise image\.size"):
        assemble.make_image(Runner(), tmp_path / "x.img", layout, assemble.derive_ids("s"),
                            boot=tmp_path, root=root, epoch=1)


# ----------------------------------------------------------------------- slow: real images


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1800)
def test_build_writes_a_checked_image_and_says_how_to_use_it(built: tuple[Path, str]) -> None:
    out, stdout = built
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert out.with_name(out.name + ".sha256").read_text() == f"{digest}  {out.name}\n"
    assert out.stat().st_size == 1024 ** 3
    assert f"failberry flash {out} /dev/sdX" in stdout
    assert "ssh admin@fbtest.local" in stdout
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, out.name + ".sha256"]
    runner = Runner()
    boot, root = partimage.boot_and_root(out)
    fs = f"{out}?offset={root.offset}"

    def debugfs(cmd: str) -> str:
        return runner.run(["debugfs", "-R", cmd, fs], capture=True).stdout.decode()

    assert re.search(r"Mode:\s+0600", debugfs("stat /etc/failberry/failberry.toml"))
    assert "iptables-legacy" in debugfs("stat /etc/alternatives/iptables")
    assert "ssh_host_" not in debugfs("ls /etc/ssh")
    cmdline = runner.run(["mtype", "-i", f"{out}@@{boot.offset}", "::cmdline.txt"],
                         capture=True, env={"MTOOLS_SKIP_CHECK": "1"}).stdout.decode()
    assert "root=LABEL=fbroot" in cmdline and "console=ttyS1,115200" in cmdline


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
def test_second_build_from_the_same_inputs_is_byte_identical(built: tuple[Path, str],
                                                             slow_dir: Path) -> None:
    # Right after the first build: the same sources, config and cache.
    out, _ = built
    cfg = slow_dir / "fbtest.toml"
    again = slow_dir / "second" / "fbtest.img"
    build_image(cfg, again, timeout=600)
    first = out.with_name(out.name + ".sha256").read_text().split()[0]
    assert again.with_name(again.name + ".sha256").read_text().split()[0] == first
    assert hashlib.sha256(again.read_bytes()).hexdigest() == first


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1200)
def test_boot_test_reaches_health_and_logs_in_with_the_key_only(built: tuple[Path, str],
                                                               admin_key: Path) -> None:
    out, _ = built
    # One boot proves several things, each folded in rather than booted again:
    # - the security-update configuration: a dry run of unattended-upgrade against
    #   repositories made in the guest (upkeep_guest.DRY_RUN), and the journal's copy;
    # - --hang-kernel: after the checks the guest's kernel panics (kernel.panic=0, SysRq c)
    #   and only the image's hardware watchdog (systemd's RuntimeWatchdogSec=15s, QEMU's
    #   i6300esb) brings it back: the console shows a second boot.
    res = run_cli(["boot-test", str(out), "--ssh-key", str(admin_key), "--timeout", "400",
                   "--exec", upkeep_guest.DRY_RUN, "--exec", upkeep_guest.JOURNAL_SAVE,
                   "--exec", upkeep_guest.BOOT_SHAPE,
                   "--hang-kernel", "150"], timeout=1100)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    upkeep_guest.check_report(res.stdout)
    reset = re.search(r"hang-kernel: watchdog reset after (\d+\.\d) s \(i6300ESB", res.stdout)
    assert reset, res.stdout
    # The watchdog's 15 s, plus QEMU's reset and the emulated kernel's first line.
    assert 10.0 <= float(reset.group(1)) <= 150.0, res.stdout
    # The image's sysctls: no IPv6 address on eth0 (nor anywhere but loopback); and
    # systemd-timesyncd, which keeps the clock file, runs.
    assert ("guest IPv6 outside lo: none; systemd-timesyncd active; "
            "disable_ipv6 default:1 eth0:1") in res.stdout, res.stdout
    assert re.search(r"/health: HTTP (200|503) \{", res.stdout), res.stdout
    assert "failberry status (exit" in res.stdout
    # QEMU's virt board has none of the Pi's power, thermal or SD-card sources: the Pi-health
    # fields are simply absent, and nothing in the status output is an error.
    # (under QEMU the Pi line holds only the root file system's state and the SD-error count)
    assert re.search(r"^\s+pi: root rw, 0 SD errors$", res.stdout, re.MULTILINE), res.stdout
    assert "Traceback" not in res.stdout, res.stdout
    assert "password login: refused (server offers only: publickey)" in res.stdout
    assert re.search(r"\d+\.\ds\s+ssh login", res.stdout)
    assert out.with_name(out.name + ".sha256").read_text().split()[0] == hashlib.sha256(
        out.read_bytes()).hexdigest(), "boot-test must not write the image"


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(600)
def test_the_same_image_boots_on_qemus_raspberry_pi_3(built: tuple[Path, str]) -> None:
    out, _ = built
    res = run_cli(["boot-test", str(out), "--machine", "raspi3b", "--timeout", "400"],
                  timeout=550)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    for milestone in ("kernel", "root mounted", "systemd", "failberryd"):
        assert re.search(rf"\d+\.\ds\s+{milestone}$", res.stdout, re.MULTILINE), res.stdout


def _mounts_and_loops_under(*paths: Path) -> list[str]:
    """Mounts (by mount point or source) and loop devices (by backing file) under the build's
    own paths. Nothing else on the machine counts: other tests and builds mount and unmount
    meanwhile, and the build may leave binfmt_misc mounted on purpose."""
    roots = [os.path.realpath(p) for p in paths]

    def under(path: str) -> bool:
        return any(path == r or path.startswith(r + "/") for r in roots)

    def unescape(field: str) -> str:  # mountinfo writes space, tab, newline, \ as \NNN
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)

    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = unescape(fields[4])
        source = unescape(fields[fields.index("-", 6) + 2])
        if under(point) or under(source):
            found.append(line)
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            file = backing.read_text().strip().removesuffix(" (deleted)")
            if under(file):
                found.append(f"/dev/{backing.parent.parent.name}: {file}")
    return found


@pytest.fixture
def interrupted_dir(slow_dir: Path) -> Iterator[Path]:
    where = slow_dir / "interrupted"
    where.mkdir()
    yield where
    shutil.rmtree(where, ignore_errors=True)


def _mmdebstrap_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("mmdebstrap.*")}


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
def test_interrupted_build_leaves_nothing_and_a_rerun_succeeds(built: tuple[Path, str],
                                                              slow_dir: Path,
                                                              interrupted_dir: Path,
                                                              tmp_path: Path) -> None:
    cfg = slow_dir / "fbtest.toml"
    out = interrupted_dir / "fbtest.img"
    cold_cache = tmp_path / "cold-cache"
    scratch_before = _mmdebstrap_dirs()
    # (cache, the line after which SIGINT comes): mid-mmdebstrap (dpkg running under
    # qemu-user in its namespace), mid-tar, mid-mke2fs/debugfs.
    cases = ((cold_cache, r"packages: \d+ unpacked"), (CACHE, r"\] unpack_base$"),
             (CACHE, r"\] assemble_image$"))
    for cache, trigger in cases:
        proc = subprocess.Popen(
            [sys.executable, "-m", "failberry", "build", "-c", str(cfg), "-o", str(out),
             "--cache-dir", str(cache)], stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        log = []
        for line in proc.stderr:
            log.append(line)
            if re.search(trigger, line.strip()):
                time.sleep(1.5)  # well inside the step
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=180)[1]
        assert proc.returncode == 130, "".join(log) + rest
        assert "interrupted" in rest
        assert list(interrupted_dir.iterdir()) == [], f"left after SIGINT at {trigger}"
        assert [p.name for p in cache.glob("*.partial*")] == []
        assert _mounts_and_loops_under(interrupted_dir, cache) == []
        assert _processes_mentioning(str(interrupted_dir)) == []
    assert _mmdebstrap_dirs() <= scratch_before, "mmdebstrap left a scratch directory in /tmp"
    assert not any(cold_cache.glob("base-*.tar")), "an interrupted bootstrap is not cached"
    build_image(cfg, out, timeout=600)
    assert out.with_name(out.name + ".sha256").is_file()


def test_the_readme_lists_the_build_steps_in_the_order_they_run() -> None:
    text = (ROOT / "README.md").read_text()
    para = text[text.index("runs a flat list of steps"):]
    para = para[:para.index("At the end")]
    assert re.findall(r"`(\w+)`", para) == [s.name for s in commands.BUILD_STEPS]
