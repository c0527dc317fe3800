"""boot-test's choice of emulator, on a small real image (real sfdisk, FAT and ext4, as the
build assembles them) whose kernel is a bare header: an ARM zImage or an arm64 Image that
runs no code. Real QEMU starts it and, as with a kernel built for another machine, nothing
ever reaches the console; boot-test says so after the silence limit instead of waiting for
/health's timeout. A board/machine mismatch stops before QEMU starts."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import SSH_KEY, run_cli
from failberry.errors import UsageError
from failberry.image import assemble, boottest
from failberry.image.runner import Runner


def _image(where: Path, arch: str) -> Path:
    """A 400 MiB image with the build's layout: config.txt naming a kernel whose header says
    `arch`, and a failberry config in the root file system."""
    root = where / "root"
    firmware = root / "boot" / "firmware"
    firmware.mkdir(parents=True)
    (root / "etc" / "failberry").mkdir(parents=True)
    (root / "etc" / "failberry" / "failberry.toml").write_text(
        f'[image]\nboard = "{"rpi2" if arch == "armhf" else "rpi3"}"\n'
        f'[admin]\nssh_authorized_keys = ["{SSH_KEY}"]\n[modem]\napn = "internet"\n')
    head = bytearray(64)
    if arch == "arm64":
        head[56:60] = b"ARM\x64"
    else:
        head[36:40] = (0x016F2818).to_bytes(4, "little")
    (firmware / "vmlinuz-test").write_bytes(bytes(head) + bytes(64 * 1024))
    (firmware / "config.txt").write_text("kernel=vmlinuz-test\n")
    (firmware / "cmdline.txt").write_text("console=ttyAMA0,115200 root=LABEL=fbroot rw\n")
    boot = where / "boot"
    assemble.split_boot(root, boot)
    out = where / f"{arch}.img"
    # 512 MiB: a power of two, as QEMU's Pi models want of an SD card.
    assemble.make_image(Runner(), out, assemble.plan_layout(512 * 1024 * 1024),
                        assemble.derive_ids(arch), boot=boot, root=root, epoch=1_700_000_000)
    return out


@pytest.mark.root
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("arch", "emulator"), [("armhf", "qemu-system-arm"),
                                                ("arm64", "qemu-system-aarch64")])
def test_a_kernel_that_prints_nothing_fails_fast_under_the_emulator_for_its_arch(
        tmp_path: Path, arch: str, emulator: str) -> None:
    if shutil.which(emulator) is None:
        pytest.skip(f"{emulator} is not installed (scripts/apt/build.txt)")
    image = _image(tmp_path, arch)
    started = time.monotonic()
    report = boottest.boot_test(boottest.BootTestOptions(image, timeout=90, machine="virt",
                                                         kernel_silence=3))
    took = time.monotonic() - started
    assert report.failure == ("the kernel printed nothing in 3 s: wrong machine or kernel for "
                              "this image?")
    assert report.machine == f"virt, {arch}"
    assert took < 60, "boot-test waited for the whole timeout"


@pytest.mark.root
@pytest.mark.timeout(120)
def test_a_mismatched_machine_is_refused_before_qemu_starts(tmp_path: Path) -> None:
    image = _image(tmp_path, "armhf")
    with pytest.raises(UsageError, match=r"use --machine virt or raspi2b"):
        boottest.boot_test(boottest.BootTestOptions(image, machine="raspi3b"))
    res = run_cli(["boot-test", str(image), "--machine", "raspi3b"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith(
        "this image's kernel is armhf (board rpi2); use --machine virt or raspi2b")
    assert "starting: qemu" not in res.stderr


@pytest.mark.root
@pytest.mark.timeout(120)
def test_a_pi_model_without_its_device_tree_in_the_boot_partition_is_refused(
        tmp_path: Path) -> None:
    image = _image(tmp_path, "armhf")
    with pytest.raises(boottest.BootTestError,
                       match=r"no bcm2836-rpi-2-b\.dtb in the boot partition; --machine raspi2b"):
        boottest.boot_test(boottest.BootTestOptions(image, machine="raspi2b"))
