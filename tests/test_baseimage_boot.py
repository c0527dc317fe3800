"""The base-image path end to end: a bootable image shaped like Raspberry Pi OS Lite (MBR,
FAT32 `bootfs` with config.txt, cmdline.txt root=PARTUUID=..., kernel, initrd and DTBs; ext4
`rootfs` with a `pi` user that has a password, hostname raspberrypi) made from the builder's
cached Debian bookworm arm64 base, without failberry in it; `failberry build --base-image`
customises it and `failberry boot-test` boots the result under QEMU, reaches /health, logs in
with the config's key and sees a password login refused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from failberry import config
from failberry.image import assemble, commands, rootfs
from failberry.image.runner import Runner
from slow_image import CACHE, ISOLATED

# The same cache as tests/test_image_build.py: the base tarball is shared with that test.
TOOLS = ("mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy", "sfdisk", "debugfs", "openssl",
         "ssh-keygen", "qemu-system-aarch64")
MiB = 1024 * 1024
DISK_ID = "5e1f0a4d"  # Raspberry Pi OS images have a fixed one too; PARTUUIDs follow from it
BOOT_START = 8192 * 512  # sectors 8192.. as Raspberry Pi OS
BOOT_SIZE = 512 * MiB  # bookworm's bootfs size
IMAGE_SIZE = 2048 * MiB
RPI_CMDLINE = (f"console=serial0,115200 console=tty1 root=PARTUUID={DISK_ID}-02 "
               "rootfstype=ext4 fsck.repair=yes rootwait\n")
RPI_FSTAB = ("proc            /proc           proc    defaults          0       0\n"
             f"PARTUUID={DISK_ID}-01  /boot/firmware  vfat    defaults          0       2\n"
             f"PARTUUID={DISK_ID}-02  /               ext4    defaults,noatime  0       1\n")
PI_GROUPS = ("adm", "dialout", "cdrom", "sudo", "audio", "video", "plugdev", "games", "users",
             "input", "render", "netdev", "gpio", "i2c", "spi")


def _sh(*argv: str | Path, stdin: str | None = None) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600,
                         input=stdin, env=env)
    assert res.returncode == 0, f"{argv[0]}: exit {res.returncode}: {res.stderr[-2000:]}"
    return res.stdout


def _base_tarball(work: Path) -> Path:
    """The builder's cached bookworm arm64 base (made with mmdebstrap when not cached), got
    through the build's own steps with the config tests/test_image_build.py builds."""
    cfg = config.parse('[image]\nboard = "rpi3"\n[modem]\napn = "internet"\n')
    ctx = commands.BuildContext(cfg, work / "unused.img", CACHE, Runner())
    ctx.workdir = work / "bootstrap"
    ctx.workdir.mkdir()
    commands.check_binfmt(ctx)
    commands.bootstrap_base(ctx)
    assert ctx.base_tar.is_file()
    return ctx.base_tar


def _add_pi_user(tree: Path) -> None:
    """Raspberry Pi OS's default user: uid 1000, a SHA-512 password hash, sudo and the
    hardware groups; the hostname raspberrypi."""
    pw_hash = _sh("openssl", "passwd", "-6", "-salt", "rpiosbase", "raspberry").strip()
    etc = tree / "etc"

    def append(name: str, line: str) -> None:
        path = etc / name
        st = path.stat()
        path.write_text(path.read_text() + line + "\n")
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)

    def add_member(name: str) -> None:
        for fname, field in (("group", 3), ("gshadow", 3)):
            path = etc / fname
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                parts = line.split(":")
                if parts[0] == name:
                    members = [m for m in parts[field].split(",") if m] + ["pi"]
                    parts[field] = ",".join(members)
                    lines[i] = ":".join(parts)
            path.write_text("\n".join(lines) + "\n")

    existing = {line.split(":")[0] for line in (etc / "group").read_text().splitlines()}
    for group in PI_GROUPS:
        if group in existing:
            add_member(group)
    append("passwd", "pi:x:1000:1000:,,,:/home/pi:/bin/bash")
    append("shadow", f"pi:{pw_hash}:19500:0:99999:7:::")
    append("group", "pi:x:1000:")
    append("gshadow", "pi:!::")
    home = tree / "home" / "pi"
    home.mkdir(parents=True)
    for skel in sorted((etc / "skel").iterdir()):
        if skel.is_file():
            shutil.copy2(skel, home / skel.name)
    for path in [home, *home.iterdir()]:
        os.chown(path, 1000, 1000)
    (etc / "hostname").write_text("raspberrypi\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (etc / "fstab").write_text(RPI_FSTAB)


def make_rpios_lite(work: Path) -> Path:
    """A bootable Raspberry-Pi-OS-Lite-shaped image from the builder's Debian base.

    Note: real Raspberry Pi OS Lite ships python3 but not python3-pyroute2, ppp,
    usb-modeswitch etc.; our base tarball already has them (the builder installs them), so
    the fetch finds little or nothing missing and the first-boot offline install has less
    to do. The customisation, account handling and boot path are the same either way."""
    runner = Runner()
    tree = work / "rootfs"
    rootfs.unpack(runner, _base_tarball(work), tree)
    boot = work / "bootfs"
    assemble.split_boot(tree, boot)
    (boot / "cmdline.txt").write_text(RPI_CMDLINE)
    _add_pi_user(tree)
    image = work / "rpios-lite.img"
    with image.open("wb") as f:
        f.truncate(IMAGE_SIZE)
    root_start = BOOT_START + BOOT_SIZE
    _sh("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image, stdin=(
        f"label: dos\nlabel-id: 0x{DISK_ID}\nunit: sectors\n\n"
        f"start={BOOT_START // 512}, size={BOOT_SIZE // 512}, type=c\n"
        f"start={root_start // 512}, type=83\n"))
    _sh("mkfs.vfat", "--offset", str(BOOT_START // 512), "-F", "32", "-n", "bootfs", image,
        str(BOOT_SIZE // 1024))
    _sh("mcopy", "-s", "-m", "-p", "-Q", "-i", f"{image}@@{BOOT_START}",
        *sorted(boot.iterdir()), "::/")
    _sh("mke2fs", "-q", "-F", "-t", "ext4", "-L", "rootfs", "-b", "4096",
        "-E", f"offset={root_start}",
        "-d", tree, image, str((IMAGE_SIZE - root_start) // 4096))
    shutil.rmtree(tree)  # a gigabyte and a half, no longer needed
    shutil.rmtree(boot)
    return image


@pytest.fixture
def work() -> Iterator[Path]:
    # Not pytest's tmp_path, which keeps the last runs' multi-gigabyte images around.
    if os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS):
        pytest.skip(f"needs root and {', '.join(TOOLS)} (scripts/apt/build.txt)")
    where = Path(tempfile.mkdtemp(prefix="failberry-rpios-", dir="/var/tmp"))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(2400)
def test_customised_raspberry_pi_os_image_boots_with_key_only_ssh(work: Path) -> None:
    base = make_rpios_lite(work)
    parts = _sh("sfdisk", "--dump", base)
    assert f"label-id: 0x{DISK_ID}" in parts and "type=c" in parts and "type=83" in parts
    key = work / "admin_ed25519"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@failberry", "-f", key)
    pub = key.with_name(key.name + ".pub").read_text().strip()
    cfg = work / "fbpi.toml"
    cfg.write_text(f'[image]\nboard = "rpi3"\nhostname = "fbpi"\n\n'
                   f'[admin]\nssh_authorized_keys = ["{pub}"]\n\n[modem]\napn = "internet"\n\n'
                   + ISOLATED)
    out = work / "out" / "fbpi.img"
    res = run_cli(["build", "--base-image", str(base), "-c", str(cfg), "-o", str(out),
                   "--cache-dir", str(CACHE)], timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
    assert out.is_file() and out.with_name(out.name + ".sha256").is_file()
    base.unlink()  # room on the disk for QEMU's snapshot

    boot = run_cli(["boot-test", str(out), "--ssh-key", str(key), "--timeout", "400",
                    "--idle-window", "0"],
                   timeout=800)
    text = boot.stdout
    assert boot.returncode == 0, text[:1500] + text[-5000:] + boot.stderr[-3000:]
    assert re.search(r"/health: HTTP (200|503) \{", text), text
    assert re.search(r"\d+\.\ds\s+ssh login", text), text
    assert "failberry status (exit" in text
    assert "password login: refused (server offers only: publickey)" in text
