"""Assembly without root mounts or loop devices: an MBR partition table (sfdisk), a FAT boot
partition made and filled in place (mkfs.vfat --offset, mtools), and an ext4 root made from a
directory in place (mke2fs -d -E offset). Everything that would vary between two builds of
the same inputs is pinned: ids derived from the config, clamped times, a fixed clock."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from failberry.errors import FailberryError
from failberry.image.rootfs import BOOT_LABEL, ROOT_LABEL
from failberry.image.runner import Runner
from failberry.units import format_size, human_size

LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
SECTOR = 512
BOOT_START = 4 * MiB  # aligned for SD cards' erase blocks
BOOT_SIZE = 256 * MiB  # room for two kernels and initrds during an upgrade
EXT4_BLOCK = 4096


class ImageTooSmall(FailberryError):
    """The configured image size cannot hold the root file system."""


@dataclass(frozen=True)
class Layout:
    """Byte offsets and sizes of the two partitions in an image of `size` bytes."""

    size: int
    boot_start: int
    boot_size: int
    root_start: int
    root_size: int


@dataclass(frozen=True)
class Ids:
    """Identifiers that would otherwise be random, derived from the build's inputs."""

    disk_id: str  # MBR disk identifier, 0x + 8 hex digits
    boot_volid: str  # FAT volume id, 8 hex digits
    root_uuid: str
    hash_seed: str


def plan_layout(size: int) -> Layout:
    """Boot at 4 MiB (256 MiB), root after it to the end of the image (MiB-aligned)."""
    size = size // MiB * MiB
    root_start = BOOT_START + BOOT_SIZE
    if size < root_start + 64 * MiB:
        raise ImageTooSmall(f"image.size: {format_size(size)} is too small; "
                            f"the boot partition alone ends at {format_size(root_start)}")
    return Layout(size, BOOT_START, BOOT_SIZE, root_start, size - root_start)


def derive_ids(seed: str) -> Ids:
    """Stable ids from a seed (the digest of the config and the base)."""
    def h(tag: str) -> bytes:
        return hashlib.sha256(f"{tag}:{seed}".encode()).digest()

    return Ids(disk_id="0x" + h("disk").hex()[:8], boot_volid=h("vfat").hex()[:8].upper(),
               root_uuid=str(uuid.UUID(bytes=h("ext4")[:16], version=4)),
               hash_seed=str(uuid.UUID(bytes=h("htree")[:16], version=4)))


def split_boot(root: Path, boot: Path) -> None:
    """Move /boot/firmware's contents out of `root` into `boot` (the FAT partition)."""
    src = root / "boot" / "firmware"
    boot.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        shutil.move(str(entry), boot / entry.name)


def walk(root: Path) -> Iterator[Path]:
    """Every path under `root` (directories first, sorted), not following symlinks."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        yield base
        # os.walk lists a symlink to a directory among the directories and never enters it.
        links = [d for d in dirnames if (base / d).is_symlink()]
        for name in sorted(filenames + links):
            yield base / name


def clamp_times(root: Path, epoch: int) -> int:
    """Clamp every path's mtime to `epoch` (atime set equal); the count of mtimes clamped."""
    clamped = 0
    for path in walk(root):
        st = os.lstat(path)
        if st.st_mtime > epoch or st.st_atime > epoch:
            mtime = min(int(st.st_mtime), epoch)
            os.utime(path, (mtime, mtime), follow_symlinks=False)
            clamped += st.st_mtime > epoch
    return clamped


def debugfs_list_script(root: Path) -> tuple[str, int]:
    """debugfs commands listing every directory (`ls -p`), which names each entry's inode;
    and the count of directories skipped because debugfs cannot quote their names."""
    lines = []
    skipped = 0
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        rel = "/" + str(Path(dirpath).relative_to(root)) if Path(dirpath) != root else "/"
        if any(c in rel for c in '"\n\\') or rel.strip() != rel:
            skipped += 1
            continue
        lines.append(f'ls -p "{rel}"')
    return "\n".join(lines) + "\n", skipped


def parse_ls_p(output: str) -> set[int]:
    """Inode numbers from `ls -p` lines (`/INO/MODE/UID/GID/NAME/SIZE/`)."""
    inodes = set()
    for line in output.splitlines():
        fields = line.split("/")
        if len(fields) >= 7 and line.startswith("/") and fields[1].isdigit():
            inodes.add(int(fields[1]))
    return inodes


def debugfs_time_script(inodes: set[int], epoch: int) -> str:
    """debugfs commands pinning ctime and atime of the inodes: mke2fs copies the source
    inode's ctime, which no user-space call can set. By number, because a path would
    follow a symlink to its target."""
    return "".join(f"sif <{ino}> ctime @{epoch}\nsif <{ino}> atime @{epoch}\n"
                   for ino in sorted(inodes))


def pin_inode_times(runner: Runner, fs: str, root: Path, epoch: int,
                    env: dict[str, str]) -> None:
    """Set every inode's ctime and atime in the ext4 file system `fs` to `epoch`."""
    script, skipped = debugfs_list_script(root)
    if skipped:
        LOG.warning("%d directories with quotes or backslashes in their names keep their "
                    "entries' build-time ctime", skipped)
    listing = runner.run(["debugfs", "-f", "-", fs], stdin=script.encode(), capture=True,
                         env=env).stdout.decode("utf-8", "replace")
    inodes = parse_ls_p(listing)
    runner.run(["debugfs", "-w", "-f", "-", fs],
               stdin=debugfs_time_script(inodes, epoch).encode(), env=env)
    LOG.info("pinned the times of %d inodes", len(inodes))


def tree_size(root: Path) -> tuple[int, int]:
    """Bytes (rounded up to blocks) and inode count of a directory tree."""
    total = 0
    inodes = 0
    for path in walk(root):
        st = os.lstat(path)
        inodes += 1
        total += (st.st_size + EXT4_BLOCK - 1) // EXT4_BLOCK * EXT4_BLOCK
    return total, inodes


def make_image(runner: Runner, out: Path, layout: Layout, ids: Ids, *, boot: Path, root: Path,
               epoch: int) -> None:
    """Write the partition table, the FAT and the ext4 file systems into `out`."""
    used, inodes = tree_size(root)
    # ext4's own share: inode tables (256 bytes per 16 KiB), the journal, directories' and
    # extents' blocks; what is left must hold the first boot's logs until the root grows.
    overhead = layout.root_size // 64 + 32 * MiB + used // 50
    if used + overhead + 16 * MiB > layout.root_size:
        raise ImageTooSmall(
            f"image.size: the root file system needs about {human_size(used + overhead)} "
            f"({inodes} files) but its partition has {human_size(layout.root_size)}; "
            f"raise image.size or drop extra_packages")
    LOG.info("root file system: %s in %d files, partition %s", human_size(used), inodes,
             human_size(layout.root_size))
    env = {"SOURCE_DATE_EPOCH": str(epoch), "E2FSPROGS_FAKE_TIME": str(epoch),
           "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}
    with out.open("wb") as f:
        f.truncate(layout.size)
    table = (f"label: dos\nlabel-id: {ids.disk_id}\nunit: sectors\n\n"
             f"start={layout.boot_start // SECTOR}, size={layout.boot_size // SECTOR}, "
             f"type=c, bootable\n"
             f"start={layout.root_start // SECTOR}, size={layout.root_size // SECTOR}, "
             f"type=83\n")
    runner.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", out],
               stdin=table.encode(), env=env)
    # FAT32 with 2 KiB clusters: enough clusters for a proper FAT32 at 256 MiB (mkfs.vfat's
    # own choice fails with --invariant at this size).
    runner.run(["mkfs.vfat", "--offset", str(layout.boot_start // SECTOR), "-F", "32", "-s", "4",
                "-i", ids.boot_volid, "--invariant", "-n", BOOT_LABEL, out,
                str(layout.boot_size // 1024)], env=env)
    fat = f"{out}@@{layout.boot_start}"
    entries = sorted(boot.iterdir())
    if entries:
        runner.run(["mcopy", "-s", "-m", "-p", "-Q", "-i", fat, *entries, "::/"], env=env)
    runner.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-U", ids.root_uuid,
                "-b", str(EXT4_BLOCK), "-m", "1",
                "-E", f"offset={layout.root_start},nodiscard,hash_seed={ids.hash_seed},"
                "root_owner=0:0",
                "-d", root, out, str(layout.root_size // EXT4_BLOCK)], env=env)
    pin_inode_times(runner, f"{out}?offset={layout.root_start}", root, epoch, env)
    runner.run(["e2fsck", "-fn", f"{out}?offset={layout.root_start}"], env=env)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex SHA-256 of a file, reading it in large blocks."""
    h = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done)
    return h.hexdigest()


class Throughput:
    """Logs bytes written per second every few seconds."""

    def __init__(self, what: str, total: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.total = total
        self._clock = clock
        self._start = clock()
        self._last = self._start

    def __call__(self, done: int) -> None:
        now = self._clock()
        if now - self._last >= 5 or done >= self.total:
            self._last = now
            rate = done / max(now - self._start, 1e-6)
            LOG.info("%s: %s of %s, %s/s", self.what, human_size(done),
                     human_size(self.total), human_size(rate))


def compress_xz(runner: Runner, image: Path, dest: Path) -> None:
    """`xz -T0` the image to `dest` (multi-threaded), atomically."""
    tmp = dest.with_name(dest.name + f".partial-{os.getpid()}")
    try:
        runner.run(["xz", "-T0", "-6", "-c", image], stdout_to=tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    LOG.info("compressed: %s (%s)", dest, human_size(dest.stat().st_size))


def make_bmap(runner: Runner, image: Path, dest: Path) -> None:
    """A block map (bmaptool) so flashing skips the image's holes."""
    tmp = dest.with_name(dest.name + f".partial-{os.getpid()}")
    try:
        runner.run(["bmaptool", "create", "-o", tmp, image])
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
