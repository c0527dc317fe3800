"""The Pi 2 (armhf) image: built from a test config with `board = "rpi2"` (its base cached
beside the arm64 one in the slow tier's cache), then boot-tested under qemu-system-arm's
`virt` (health, key login, password refused) and QEMU's Pi 2 model `raspi2b` (the Pi's own
device tree, SD controller and UART; failberryd's own log line on the console)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from failberry.image import boottest, partimage, qemu
from failberry.image.runner import Runner
from slow_image import HAVE_BUILD_TOOLS, build_image, keypair, write_config


@pytest.fixture(scope="session")
def rpi2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rpi2")


@pytest.fixture(scope="session")
def rpi2_key(rpi2_dir: Path) -> Path:
    return keypair(rpi2_dir)


@pytest.fixture(scope="session")
def rpi2_built(rpi2_dir: Path, rpi2_key: Path) -> Path:
    """One rpi2 image (its armhf base cold the first time on a machine, then warm)."""
    if os.geteuid() != 0 or not HAVE_BUILD_TOOLS or not shutil.which("qemu-system-arm"):
        pytest.skip("needs root and the build tools (scripts/apt/build.txt)")
    cfg = write_config(rpi2_dir, rpi2_key, hostname="fbpi2", board="rpi2")
    out = rpi2_dir / "out" / "fbpi2.img"
    build_image(cfg, out)
    return out


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1800)
def test_rpi2_image_has_the_pi_2_kernel_device_tree_and_console(rpi2_built: Path,
                                                                 tmp_path: Path) -> None:
    runner = Runner()
    boot, root = partimage.boot_and_root(rpi2_built)
    files = boottest.extract_boot(runner, rpi2_built, boot, tmp_path)
    assert qemu.kernel_arch(files.kernel) == "armhf"
    assert files.kernel.name.endswith("-armmp") and files.initrd is not None
    assert (tmp_path / "bcm2836-rpi-2-b.dtb").is_file()
    assert "console=ttyAMA0,115200" in files.cmdline and "root=LABEL=fbroot" in files.cmdline
    # The initramfs carries the Pi 2's SD driver (hooks/check-initramfs.sh passed too).
    modules = runner.run(["debugfs", "-R", "ls -p /usr/lib/modules",
                          f"{rpi2_built}?offset={root.offset}"], capture=True).stdout.decode()
    assert "-armmp" in modules


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
def test_rpi2_image_boots_under_qemu_virt_with_health_and_key_login(rpi2_built: Path,
                                                                    rpi2_key: Path) -> None:
    res = run_cli(["boot-test", str(rpi2_built), "--ssh-key", str(rpi2_key), "--timeout", "400",
                   "--idle-window", "0"],
                  timeout=800)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert "boot-test (virt, armhf): ok" in res.stdout
    assert "qemu-system-arm -M virt,highmem=off -cpu cortex-a15" in res.stderr
    assert "restrict=on" in res.stderr
    assert re.search(r"/health: HTTP (200|503) \{", res.stdout), res.stdout
    assert "failberry status (exit" in res.stdout
    assert "password login: refused (server offers only: publickey)" in res.stdout
    assert re.search(r"\d+\.\ds\s+ssh login", res.stdout)
    assert rpi2_built.with_name(rpi2_built.name + ".sha256").read_text().split()[0] == \
        hashlib.sha256(rpi2_built.read_bytes()).hexdigest(), "boot-test must not write the image"


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1800)
def test_rpi2_image_boots_on_qemus_raspberry_pi_2(rpi2_built: Path) -> None:
    # Up to three boots: a full CI run here ended on the oops below with one retry allowed.
    # (Bringing up one guest CPU to avoid it made the boot about 3x slower: no way out.)
    for _ in range(3):
        res = run_cli(["boot-test", str(rpi2_built), "--machine", "raspi2b", "--timeout", "400"],
                      timeout=550)
        # QEMU 7.2's Pi 2 now and then loses an SD host interrupt under emulation; the
        # kernel's driver then oopses ("timeout waiting for hardware interrupt", then a NULL
        # pointer in bcm2835_finish_data) and boot-test stops at the crash. Another boot
        # tells that emulator fault from a real one; any other failure counts at once.
        if res.returncode == 0 or "timeout waiting for hardware interrupt" not in res.stdout:
            break
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert "boot-test (raspi2b, armhf): ok" in res.stdout
    for milestone in ("kernel", "root mounted", "systemd", "failberryd"):
        assert re.search(rf"\d+\.\ds\s+{milestone}$", res.stdout, re.MULTILINE), res.stdout
    assert "network checks skipped: QEMU's raspi2b has no eth0" in res.stdout


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(120)
def test_rpi2_image_on_the_pi_3_machine_is_refused_before_qemu_starts(rpi2_built: Path) -> None:
    res = run_cli(["boot-test", str(rpi2_built), "--machine", "raspi3b"], timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].endswith(
        "--machine raspi3b boots arm64 kernels (rpi3, rpi4, zero2w), but this image's kernel "
        "is armhf (board rpi2); use --machine virt or raspi2b")
    assert "starting: qemu" not in res.stderr
