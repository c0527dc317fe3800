"""The base-image path on an image shaped like Raspberry Pi OS Lite (MBR: FAT32 `bootfs` with
config.txt and cmdline.txt, ext4 `rootfs` with a `pi` user), made here with mkfs.vfat, mcopy,
mke2fs -d and sfdisk, no mounts; the result is read back with debugfs and mtools."""

from __future__ import annotations

import lzma
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import ROOT, SSH_KEY
from failberry import config
from failberry.image.baseimage import customise_base_image
from failberry.image.debs import BASE_IMAGE_PACKAGES, apt_fetch
from failberry.image.partimage import ImageError, boot_and_root, read_mbr

MiB = 1024**2
BOOT_START = 8192  # sectors, as Raspberry Pi OS
BOOT_SIZE = 64 * MiB
ROOT_SIZE = 96 * MiB
CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=feedbeef-02 rootfstype=ext4 "
           "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n")
PASSWD = ("root:x:0:0:root:/root:/bin/bash\n"
          "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
          "pi:x:1000:1000:,,,:/home/pi:/bin/bash\n")
SHADOW = ("root:*:19500:0:99999:7:::\ndaemon:*:19500:0:99999:7:::\n"
          "nobody:*:19500:0:99999:7:::\npi:$6$rpi$defaultdefaultdefault:19500:0:99999:7:::\n")
GROUP = ("root:x:0:\nadm:x:4:pi\ndialout:x:20:pi\nsudo:x:27:pi\nshadow:x:42:\n"
         "plugdev:x:46:pi\nusers:x:100:pi\nnogroup:x:65534:\nnetdev:x:106:pi\npi:x:1000:\n")
GSHADOW = "".join(f"{line.split(':')[0]}:*::{line.split(':')[3]}\n"
                  for line in GROUP.splitlines())
STATUS = ("Package: dpkg\nStatus: install ok installed\nArchitecture: arm64\n"
          "Version: 1.21.22\n\n")


def sh(*argv: str | Path, input: str | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True,
                          timeout=120, input=input, env=env).stdout


def make_rpios_image(path: Path, work: Path) -> Path:
    """An image with Raspberry Pi OS's layout, boot files and a Debian-like root."""
    tree = work / "rootfs"
    for d in ("etc/ssh/sshd_config.d", "etc/skel", "etc/systemd/system/multi-user.target.wants",
              "lib/systemd/system", "var/lib/systemd", "var/lib/dpkg", "usr/bin", "home/pi",
              "boot/firmware", "var/cache"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    files = {"etc/passwd": (PASSWD, 0o644, 0), "etc/shadow": (SHADOW, 0o640, 42),
             "etc/group": (GROUP, 0o644, 0), "etc/gshadow": (GSHADOW, 0o640, 42),
             "etc/hostname": ("raspberrypi\n", 0o644, 0),
             "etc/machine-id": ("0123456789abcdef0123456789abcdef\n", 0o444, 0),
             "etc/skel/.bashrc": ("# rpi bashrc\n", 0o644, 0),
             "etc/ssh/sshd_config": ("Include /etc/ssh/sshd_config.d/*.conf\n", 0o644, 0),
             "etc/ssh/sshd_config.d/rename_user.conf": ("Banner /usr/share/userconf\n", 0o644,
                                                        0),
             "etc/ssh/ssh_host_ed25519_key": ("BAKED PRIVATE KEY\n", 0o600, 0),
             "etc/ssh/ssh_host_ed25519_key.pub": ("BAKED PUBLIC KEY\n", 0o644, 0),
             "var/lib/systemd/random-seed": ("SEED" * 128, 0o600, 0),
             "var/lib/dpkg/status": (STATUS, 0o644, 0),
             "lib/systemd/system/userconfig.service": ("[Unit]\n", 0o644, 0)}
    for rel, (text, mode, gid) in files.items():
        p = tree / rel
        p.write_text(text)
        os.chmod(p, mode)
        os.chown(p, 0, gid)
    os.chown(tree / "home/pi", 1000, 1000)
    # dpkg as an arm64 ELF header: the image's architecture is read from it.
    elf = bytearray(64)
    elf[:7] = b"\x7fELF\x02\x01\x01"
    elf[18:20] = (0xB7).to_bytes(2, "little")
    (tree / "usr/bin/dpkg").write_bytes(bytes(elf))
    os.chmod(tree / "usr/bin/dpkg", 0o755)
    (tree / "usr/bin/sudo").write_bytes(b"setuid program")
    os.chmod(tree / "usr/bin/sudo", 0o4755)
    boot = work / "boot.vfat"
    root = work / "root.ext4"
    with boot.open("wb") as f:
        f.truncate(BOOT_SIZE)
    with root.open("wb") as f:
        f.truncate(ROOT_SIZE)
    sh("mkfs.vfat", "-F", "32", "-n", "bootfs", boot)
    for name, text in (("config.txt", "arm_64bit=1\nenable_uart=1\n"), ("cmdline.txt", CMDLINE)):
        (work / name).write_text(text)
        sh("mcopy", "-i", boot, work / name, f"::/{name}")
    sh("mke2fs", "-q", "-t", "ext4", "-L", "rootfs", "-d", tree, root)
    boot_sectors = BOOT_SIZE // 512
    with path.open("wb") as f:
        f.truncate(BOOT_START * 512 + BOOT_SIZE + ROOT_SIZE)
    sh("sfdisk", "-q", path, input=(
        "label: dos\nlabel-id: 0xfeedbeef\n"
        f"start={BOOT_START}, size={boot_sectors}, type=c\n"
        f"start={BOOT_START + boot_sectors}, type=83\n"))
    for part, sector in ((boot, BOOT_START), (root, BOOT_START + boot_sectors)):
        sh("dd", f"if={part}", f"of={path}", "bs=1M", f"seek={sector * 512}", "oflag=seek_bytes",
           "conv=notrunc,sparse", "status=none")
    return path


class FakeFetcher:
    """Stands in for the mirror: builds one real .deb with dpkg-deb and records the request."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.calls: list[dict[str, object]] = []

    def __call__(self, *, arch: str, suite: str, mirror: str, dpkg_status: bytes,
                 packages: Sequence[str], work_dir: Path) -> list[Path]:
        self.calls.append({"arch": arch, "suite": suite, "status": dpkg_status,
                           "packages": tuple(packages), "work_dir": work_dir})
        pkg = self.work / "pkg"
        (pkg / "DEBIAN").mkdir(parents=True, exist_ok=True)
        (pkg / "DEBIAN/control").write_text(
            f"Package: failberry-test-dep\nVersion: 1.0\nArchitecture: {arch}\n"
            "Maintainer: test <test@example.org>\nDescription: test package\n")
        deb = self.work / f"failberry-test-dep_1.0_{arch}.deb"
        sh("dpkg-deb", "--root-owner-group", "-Zxz", "--build", pkg, deb)
        return [deb]


def make_config(tmp: Path, *, keys: bool = True) -> config.Config:
    lines = ["[image]", 'hostname = "fbbase"', 'extra_packages = ["tcpdump"]', "[admin]"]
    if keys:
        lines.append(f'ssh_authorized_keys = ["{SSH_KEY}"]')
    lines += ["[modem]", 'apn = "internet"', 'pin = "2468"']
    return config.parse("\n".join(lines) + "\n", base_dir=tmp)


class Image:
    """Reads a customised image back the way a test can trust: debugfs and mtools."""

    def __init__(self, path: Path) -> None:
        self.path = path
        boot, root = boot_and_root(path)
        self.root = f"{path}?offset={root.offset}"
        self.boot = f"{path}@@{boot.offset}"

    def cat(self, path: str) -> bytes:
        return subprocess.run(["debugfs", "-R", f"cat {path}", self.root], check=True,
                              capture_output=True, timeout=60).stdout

    def stat(self, path: str) -> tuple[str, int, int, int]:
        """(type, permission bits incl. setuid, uid, gid) from debugfs's stat."""
        out = sh("debugfs", "-R", f"stat {path}", self.root)
        m = re.search(r"Type: (\w+)\s+Mode:\s+(\d+).*?\nGeneration.*?User:\s+(\d+)\s+Group:\s+"
                      r"(\d+)", out, re.S)
        if m is None:
            raise AssertionError(f"{path}: not in the image:\n{out}")
        return m.group(1), int(m.group(2), 8), int(m.group(3)), int(m.group(4))

    def exists(self, path: str) -> bool:
        proc = subprocess.run(["debugfs", "-R", f"stat {path}", self.root], capture_output=True,
                              text=True, timeout=60)
        return "not found" not in proc.stderr

    def readlink(self, path: str) -> str:
        out = sh("debugfs", "-R", f"stat {path}", self.root)
        m = re.search(r'Fast link dest: "([^"]*)"', out)
        assert m, out
        return m.group(1)

    def boot_file(self, name: str) -> str:
        return sh("mtype", "-i", self.boot, f"::/{name}", env={**os.environ,
                                                               "MTOOLS_SKIP_CHECK": "1"})


@pytest.fixture(scope="module")
def customised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Image, object, FakeFetcher]:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the test image's files their owners")
    tmp = tmp_path_factory.mktemp("base")
    base = make_rpios_image(tmp / "rpios.img", tmp)
    xz = tmp / "rpios.img.xz"
    xz.write_bytes(lzma.compress(base.read_bytes(), preset=0))
    fetcher = FakeFetcher(tmp)
    out = tmp / "out.img.tmp"
    result = customise_base_image(make_config(tmp), xz, out, out_dir=tmp,
                                  cache_dir=tmp / "cache", fetch=fetcher)
    return Image(out), result, fetcher


@pytest.mark.root
@pytest.mark.timeout(300)
def test_admin_is_key_only_and_pi_is_locked(customised: tuple[Image, object, FakeFetcher]
                                            ) -> None:
    img, _, _ = customised
    passwd = img.cat("/etc/passwd").decode()
    assert "admin:x:1001:1001:failberry admin:/home/admin:/bin/bash" in passwd
    shadow = {line.split(":")[0]: line.split(":")[1]
              for line in img.cat("/etc/shadow").decode().splitlines()}
    assert shadow["admin"] == "*"
    assert shadow["pi"] == "!$6$rpi$defaultdefaultdefault"
    assert shadow["root"] == "*"
    assert img.stat("/etc/shadow") == ("regular", 0o640, 0, 42)
    assert img.stat("/home/admin") == ("directory", 0o700, 1001, 1001)
    assert img.stat("/home/admin/.ssh") == ("directory", 0o700, 1001, 1001)
    assert img.stat("/home/admin/.ssh/authorized_keys") == ("regular", 0o600, 1001, 1001)
    assert img.cat("/home/admin/.ssh/authorized_keys").decode() == SSH_KEY + "\n"
    assert img.cat("/home/admin/.bashrc") == b"# rpi bashrc\n"
    assert img.stat("/etc/sudoers.d/010-failberry-admin")[1] == 0o440
    assert b"PasswordAuthentication no" in img.cat("/etc/ssh/sshd_config.d/10-failberry.conf")
    # Raspberry Pi OS's first-boot user wizard is masked; its banner is gone.
    assert img.readlink("/etc/systemd/system/userconfig.service") == "/dev/null"
    assert not img.exists("/etc/ssh/sshd_config.d/rename_user.conf")
    # The existing home and setuid program are untouched.
    assert img.stat("/home/pi") == ("directory", 0o755, 1000, 1000)
    assert img.stat("/usr/bin/sudo") == ("regular", 0o4755, 0, 0)


@pytest.mark.root
@pytest.mark.timeout(300)
def test_failberry_is_installed_and_enabled(customised: tuple[Image, object, FakeFetcher]
                                            ) -> None:
    img, _, _ = customised
    assert img.stat("/etc/failberry/failberry.toml") == ("regular", 0o600, 0, 0)
    assert b'pin = "2468"' in img.cat("/etc/failberry/failberry.toml")
    assert img.stat("/usr/bin/failberry")[:2] == ("regular", 0o755)
    pkg = "/usr/lib/python3/dist-packages/failberry"
    assert img.cat(f"{pkg}/cli.py") == (ROOT / "src/failberry/cli.py").read_bytes()
    wants = "/etc/systemd/system/multi-user.target.wants"
    assert img.readlink(f"{wants}/failberryd.service") == "/etc/systemd/system/failberryd.service"
    assert img.readlink(f"{wants}/ssh.service") == "/lib/systemd/system/ssh.service"
    assert img.cat("/etc/hostname") == b"fbbase\n"
    assert img.stat("/usr/lib/failberry/firstboot")[:2] == ("regular", 0o755)


@pytest.mark.root
@pytest.mark.timeout(300)
def test_identity_is_cleared(customised: tuple[Image, object, FakeFetcher]) -> None:
    img, result, _ = customised
    assert not img.exists("/etc/ssh/ssh_host_ed25519_key")
    assert not img.exists("/etc/ssh/ssh_host_ed25519_key.pub")
    assert not img.exists("/var/lib/systemd/random-seed")
    assert img.cat("/etc/machine-id") == b""
    assert "/etc/ssh/ssh_host_ed25519_key" in result.removed  # type: ignore[attr-defined]


@pytest.mark.root
@pytest.mark.timeout(300)
def test_packages_are_fetched_for_the_images_arch_and_staged(
        customised: tuple[Image, object, FakeFetcher]) -> None:
    img, _, fetcher = customised
    (call,) = fetcher.calls
    assert call["arch"] == "arm64"
    assert call["status"] == STATUS.encode()
    packages = call["packages"]
    assert isinstance(packages, tuple)
    assert set(BASE_IMAGE_PACKAGES) <= set(packages) and "tcpdump" in packages
    deb = "/var/cache/failberry/debs/failberry-test-dep_1.0_arm64.deb"
    assert img.cat(deb)[:8] == b"!<arch>\n"


@pytest.mark.root
@pytest.mark.timeout(300)
def test_boot_partition_and_file_systems_are_sound(
        customised: tuple[Image, object, FakeFetcher]) -> None:
    img, _, _ = customised
    assert img.boot_file("ssh") == ""
    # Kernel interface names, as on a built image: the LAN file matches eth0.
    assert img.boot_file("cmdline.txt") == CMDLINE.rstrip("\n") + " net.ifnames=0\n"
    assert "enable_uart=1" in img.boot_file("config.txt")
    assert [p.type for p in read_mbr(img.path)] == [0x0C, 0x83]
    subprocess.run(["e2fsck", "-f", "-n", img.root], check=True, capture_output=True,
                   timeout=120)
    boot, _ = boot_and_root(img.path)
    fat = img.path.with_name("boot-copy.vfat")  # fsck.vfat takes no offset: check a copy
    with img.path.open("rb") as src, fat.open("wb") as dst:
        src.seek(boot.offset)
        dst.write(src.read(boot.size))
    subprocess.run(["fsck.vfat", "-n", str(fat)], check=True, capture_output=True, timeout=120)


@pytest.mark.root
@pytest.mark.timeout(300)
def test_generated_key_for_a_config_without_one(tmp_path: Path) -> None:
    base = make_rpios_image(tmp_path / "rpios.img", tmp_path)
    result = customise_base_image(make_config(tmp_path, keys=False), base,
                                  tmp_path / "out.img", out_dir=tmp_path,
                                  cache_dir=tmp_path / "cache", fetch=FakeFetcher(tmp_path))
    assert result.generated_key is not None
    pub = result.generated_key.with_name(result.generated_key.name + ".pub").read_text()
    assert Image(tmp_path / "out.img").cat("/home/admin/.ssh/authorized_keys").decode() == pub
    assert result.ssh_command == f"ssh -i {result.generated_key} admin@fbbase.local"
    assert base.read_bytes()[:512] == (tmp_path / "out.img").read_bytes()[:512]


def test_images_without_the_layout_are_refused(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageError, match="no MBR partition table"):
        read_mbr(blank)
    sh("sfdisk", "-q", blank, input="label: dos\nstart=1, type=83\n")
    with pytest.raises(ImageError, match="expected a FAT boot and a Linux root partition, "
                                         "found 1: type 0x83"):
        boot_and_root(blank)


@pytest.mark.timeout(900)
def test_apt_fetches_what_an_arm64_system_lacks(tmp_path: Path) -> None:
    """The real mirror: this machine's package set, relabelled arm64 and without the packages
    the base image lacks, resolves to arm64 .debs of exactly those (plus missing deps)."""
    stanzas = Path("/var/lib/dpkg/status").read_text().split("\n\n")
    lacking = {"python3-pyroute2", "python3-serial", "ppp", "usb-modeswitch"}
    kept = [s for s in stanzas
            if not any(s.startswith(f"Package: {p}\n") for p in lacking)]
    status = "\n\n".join(kept).replace("Architecture: amd64", "Architecture: arm64")
    debs = apt_fetch(arch="arm64", suite="bookworm", mirror=config.DEFAULT_MIRROR,
                     dpkg_status=status.encode(), packages=sorted(lacking),
                     work_dir=tmp_path / "apt")
    names = {d.name.split("_")[0]: d.name for d in debs}
    assert lacking <= set(names)
    assert names["ppp"].endswith("_arm64.deb")
    assert names["python3-pyroute2"].endswith("_all.deb")
    for deb in debs:
        assert sh("dpkg-deb", "-f", deb, "Architecture").strip() in ("arm64", "all")


def test_kernel_interface_names_is_added_once_and_keeps_the_line() -> None:
    from failberry.image.baseimage import kernel_interface_names

    line = "console=serial0,115200 root=PARTUUID=5e1f0a4d-02 rootwait\n"
    once = kernel_interface_names(line)
    assert once == "console=serial0,115200 root=PARTUUID=5e1f0a4d-02 rootwait net.ifnames=0\n"
    assert kernel_interface_names(once) == once
