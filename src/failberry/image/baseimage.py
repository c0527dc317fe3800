"""`failberry build --base-image IMG[.xz]`: customise an existing Raspberry Pi OS Lite image
instead of bootstrapping Debian, without mounting anything.

The image's own account files are copied out (debugfs `dump -p`) into a staging tree,
customise_rootfs runs on it exactly as for a built image, and the paths it recorded are
written back into the ext4 root at its partition offset (debugfs `write`, `mkdir`, `symlink`,
`sif` for mode and owner). Packages the base lacks are fetched for its architecture and left
for the first-boot unit to install offline. On the FAT boot partition (mtools) the `ssh`
flag is set; the admin is a key-only user in /etc/passwd, so Raspberry Pi OS's
`userconf.txt` (which needs a password hash) is not used and its first-boot user wizard is
masked: there is no default password.
"""

from __future__ import annotations

import fnmatch
import logging
import tempfile
from pathlib import Path, PurePosixPath

from failberry.config import Config
from failberry.image.customise import IDENTITY_FILES, CustomiseResult, customise_rootfs
from failberry.image.debs import BASE_IMAGE_PACKAGES, DebFetcher, apt_fetch
from failberry.image.partimage import Ext4, Fat, ImageError, boot_and_root, ext4_commands
from failberry.image.runner import run
from failberry.image.sources import INSTALLED, Sources

LOG = logging.getLogger(__name__)

ACCOUNT_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow")


def unpack_image(image_in: Path, image_out: Path) -> None:
    """Copy (or decompress an .xz) base image to the file we will change."""
    if not image_in.is_file():
        raise ImageError(f"{image_in}: no such base image")
    if image_in.suffix == ".xz":
        LOG.info("decompressing %s", image_in)
        run(["xz", "-d", "-c", "-T0", image_in], stdout_to=image_out, timeout=1800)
    else:
        run(["cp", "--sparse=always", "--reflink=auto", image_in, image_out], timeout=1800)


def stage_from_image(fs: Ext4, staging: Path) -> None:
    """The files customise_rootfs reads, copied out of the image with their modes and owners,
    plus stand-ins for the identity files it removes (so the removal is recorded)."""
    for path in ACCOUNT_FILES:
        dest = staging / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not fs.dump(path, dest):
            raise ImageError(f"{fs.image}: {path} is missing from the root partition")
    skel = fs.listdir("/etc/skel") or {}
    for name, entry in sorted(skel.items()):
        if not entry.is_dir and not entry.is_symlink:
            dest = staging / "etc/skel" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.dump(f"/etc/skel/{name}", dest)
    for pattern in IDENTITY_FILES:
        parent = str(PurePosixPath(pattern).parent)
        for name, entry in sorted((fs.listdir(parent) or {}).items()):
            if not fnmatch.fnmatchcase(name, PurePosixPath(pattern).name) or entry.is_dir:
                continue
            stand_in = staging / parent.lstrip("/") / name
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            if entry.is_symlink:
                stand_in.symlink_to("/etc/machine-id")
            else:
                stand_in.write_bytes(b"")


def copy_delta(fs: Ext4, staging: Path, result: CustomiseResult) -> int:
    """Write every path customise_rootfs recorded into the image; returns the command count."""
    commands = []
    for path in result.removed:
        if fs.lookup(path) is not None:
            commands.append(f"rm {path}")
    for entry in result.entries:  # sorted: parents come before their children
        source = staging / entry.path.lstrip("/") if entry.kind == "file" else None
        commands += ext4_commands(entry.path, entry.kind, source=source, target=entry.target,
                                  mode=entry.mode, uid=entry.uid, gid=entry.gid,
                                  exists=fs.lookup(entry.path))
    fs.apply(commands)
    return len(commands)


def kernel_interface_names(cmdline: str) -> str:
    """cmdline.txt with `net.ifnames=0` added (the one line, other words kept in order)."""
    words = cmdline.split()
    if "net.ifnames=0" in words:
        return cmdline
    return " ".join([*words, "net.ifnames=0"]) + "\n"


def customise_base_image(cfg: Config, image_in: Path, image_out_tmp: Path, *,
                         out_dir: Path, cache_dir: Path, fetch: DebFetcher = apt_fetch,
                         sources: Sources = INSTALLED) -> CustomiseResult:
    """Customise a Raspberry Pi OS image (raw or .xz) into `image_out_tmp`."""
    unpack_image(image_in, image_out_tmp)
    boot, root = boot_and_root(image_out_tmp)
    LOG.info("base image %s: boot partition at %d (%d MiB), root at %d (%d MiB)", image_in,
             boot.offset, boot.size >> 20, root.offset, root.size >> 20)
    fs = Ext4(image_out_tmp, root)
    arch = fs.arch()
    if arch != cfg.image.board.arch:
        LOG.warning("base image is %s but image.board %s is %s; packages follow the image",
                    arch, cfg.image.board.value, cfg.image.board.arch)
    with tempfile.TemporaryDirectory(prefix="failberry-stage-") as tmp:
        staging = Path(tmp) / "root"
        stage_from_image(fs, staging)
        packages = BASE_IMAGE_PACKAGES + tuple(cfg.image.extra_packages)
        debs = fetch(arch=arch, suite=cfg.image.suite, mirror=cfg.image.mirror,
                     dpkg_status=fs.read("/var/lib/dpkg/status"), packages=packages,
                     work_dir=cache_dir / f"apt-{cfg.image.suite}-{arch}")
        result = customise_rootfs(cfg, staging, out_dir=out_dir, debs=debs, sources=sources)
        count = copy_delta(fs, staging, result)
        fs.check()
        # Raspberry Pi OS enables sshd when this file is on the boot partition; the unit is
        # enabled in the root too, so either way the admin can log in.
        fat = Fat(image_out_tmp, boot)
        fat.write("ssh", b"", Path(tmp))
        # failberry's LAN file matches the kernel's name (eth0), as on a built image; without
        # net.ifnames=0 udev (already in the initramfs, where no file of the root can stop
        # it) renames the interface (enxMAC on a Pi, enp0s2 under QEMU) and the LAN never
        # gets its address.
        cmdline = fat.read("cmdline.txt")
        if cmdline is None:
            raise ImageError(f"{image_in}: no cmdline.txt on the boot partition")
        fat.write("cmdline.txt", kernel_interface_names(cmdline.decode()).encode(), Path(tmp))
    LOG.info("customised base image: %d paths, %d removed, %d debugfs commands, %d packages "
             "for the first boot", len(result.entries), len(result.removed), count, len(debs))
    return result
