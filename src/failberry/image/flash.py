"""`failberry flash IMAGE DEVICE`: write an image to an SD card safely, then prove it landed.

Refuses what is not a whole block device, a device with anything mounted (or used as swap,
or held by another device), the disk the running system lives on, and devices larger than a
sane SD card unless asked. Writes only the mapped ranges when IMAGE.bmap exists, fsyncs,
drops the cache and reads back, comparing SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from failberry.errors import FailberryError, UsageError
from failberry.image.partimage import require_image
from failberry.units import human_size

LOG = logging.getLogger(__name__)

MAX_SANE = 512 * 1024**3  # the largest SD card we accept without --allow-large
CHUNK = 4 * 1024**2


class FlashError(FailberryError):
    """Writing or verifying the device failed (I/O): exit 1."""


@dataclass(frozen=True)
class Device:
    """A whole block device we may overwrite."""

    path: Path
    name: str
    size: int
    model: str


@dataclass(frozen=True)
class BlockMap:
    """The ranges of an image that hold data (bmaptool's format), in bytes."""

    image_size: int
    ranges: tuple[tuple[int, int, str], ...]  # (offset, length, sha256 or "")

    @property
    def mapped(self) -> int:
        """Bytes that will be written."""
        return sum(length for _, length, _ in self.ranges)


class Confirm(Protocol):
    """Asks the person at the terminal; True means go ahead."""

    def __call__(self, question: str) -> bool: ...


@dataclass(frozen=True)
class System:
    """Where the facts about this machine come from (tests point these at fakes)."""

    sys_root: Path = Path("/sys")
    mountinfo: Path = Path("/proc/self/mountinfo")
    swaps: Path = Path("/proc/swaps")
    root: Path = Path("/")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _majmin(st: os.stat_result) -> str:
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def _disk_of(majmin: str, system: System) -> str:
    """The sysfs name of the whole disk holding block device MAJ:MIN (itself if a disk)."""
    node = (system.sys_root / "dev/block" / majmin).resolve()
    if (node / "partition").exists():
        node = node.parent
    return node.name


def check_device(device: Path, *, allow_large: bool, system: System | None = None) -> Device:
    """The device if it is safe to overwrite; otherwise UsageError saying why."""
    system = system or System()
    try:
        st = device.stat()
    except FileNotFoundError:
        raise UsageError(f"{device}: no such device") from None
    if not stat.S_ISBLK(st.st_mode):
        what = "a regular file" if stat.S_ISREG(st.st_mode) else (
            "a character device" if stat.S_ISCHR(st.st_mode) else "not a block device")
        raise UsageError(f"{device}: is {what}, not a whole disk such as /dev/sdX or "
                         "/dev/mmcblk0")
    majmin = _majmin(st)
    sysdir = (system.sys_root / "dev/block" / majmin).resolve()
    name = sysdir.name
    if (sysdir / "partition").exists():
        disk = sysdir.parent.name
        raise UsageError(f"{device}: is partition {_read(sysdir / 'partition')} of /dev/{disk}; "
                         f"give the whole disk /dev/{disk}")
    root_dev = system.root.stat().st_dev
    root_disk = _disk_of(f"{os.major(root_dev)}:{os.minor(root_dev)}", system)
    if root_disk == name:
        raise UsageError(f"{device}: holds the running system's root file system; refusing")
    parts = {majmin: name}
    for child in sorted(sysdir.iterdir()):
        if (child / "partition").exists():
            parts[_read(child / "dev")] = child.name
    for line in _read(system.mountinfo).splitlines():
        fields = line.split()
        source = line.split(" - ", 1)[1].split()[1] if " - " in line else ""
        hit = parts.get(fields[2]) if len(fields) > 4 else None
        if hit is None and source.startswith("/dev/") and Path(source).name in parts.values():
            hit = Path(source).name
        if hit is not None:
            raise UsageError(f"{device}: /dev/{hit} is mounted on {fields[4]}; unmount it first "
                             f"(umount /dev/{hit})")
    for line in _read(system.swaps).splitlines()[1:]:
        swap = Path(line.split()[0]).name if line.split() else ""
        if swap in parts.values():
            raise UsageError(f"{device}: /dev/{swap} is in use as swap; swapoff it first")
    for part in parts.values():
        holders = sysdir / "holders" if part == name else sysdir / part / "holders"
        if holders.is_dir() and any(holders.iterdir()):
            raise UsageError(f"{device}: /dev/{part} is in use by "
                             f"{', '.join(sorted(h.name for h in holders.iterdir()))}")
    size = int(_read(sysdir / "size") or 0) * 512
    if size == 0:
        raise UsageError(f"{device}: has no medium (size 0); insert the card")
    if size > MAX_SANE and not allow_large:
        raise UsageError(f"{device}: is {human_size(size)}, larger than any sane SD card "
                         f"({human_size(MAX_SANE)}); is it a disk of this machine? "
                         "Pass --allow-large if you are sure")
    model = " ".join(filter(None, (_read(sysdir / "device/vendor"),
                                   _read(sysdir / "device/model"))))
    if not model and (sysdir / "loop/backing_file").exists():
        model = f"loop device on {_read(sysdir / 'loop/backing_file')}"
    return Device(device, name, size, model or "unknown model")


def read_bmap(path: Path) -> BlockMap:
    """Parse a bmaptool block map (format 1.x or 2.x)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise UsageError(f"{path}: not a readable block map: {e}") from None
    try:
        block = int((root.findtext("BlockSize") or "").strip())
        image_size = int((root.findtext("ImageSize") or "").strip())
        kind = (root.findtext("ChecksumType") or "").strip()
        ranges = []
        for rng in root.iter("Range"):
            first, _, last = (rng.text or "").strip().partition("-")
            start = int(first) * block
            end = min((int(last or first) + 1) * block, image_size)
            chksum = rng.get("chksum", "") if kind == "sha256" else ""
            ranges.append((start, end - start, chksum))
    except ValueError as e:
        raise UsageError(f"{path}: malformed block map: {e}") from None
    return BlockMap(image_size, tuple(ranges))


def _chunks(offset: int, length: int) -> Iterator[tuple[int, int]]:
    end = offset + length
    while offset < end:
        n = min(CHUNK, end - offset)
        yield offset, n
        offset += n


def write_image(image: Path, device: Device, *, bmap: BlockMap | None = None,
                progress: Callable[[int, int], None] | None = None) -> str:
    """Write the image (its mapped ranges) to the device, fsync, read back; returns SHA-256."""
    image_size = image.stat().st_size
    if bmap is not None and bmap.image_size != image_size:
        raise UsageError(f"{image}.bmap: describes a {bmap.image_size}-byte image but {image} "
                         f"has {image_size} bytes; rebuild the block map")
    if image_size > device.size:
        raise UsageError(f"{image}: {human_size(image_size)} does not fit on {device.path} "
                         f"({human_size(device.size)})")
    ranges = bmap.ranges if bmap else ((0, image_size, ""),)
    total = sum(length for _, length, _ in ranges)
    written = hashlib.sha256()
    done = 0
    try:
        # O_EXCL on a block device: the kernel refuses if anything has it mounted or claimed.
        dev_fd = os.open(device.path, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        raise FlashError(f"{device.path}: cannot open for writing: {e.strerror}") from None
    try:
        with image.open("rb") as img:
            for offset, length, chksum in ranges:
                part = hashlib.sha256()
                for pos, n in _chunks(offset, length):
                    data = os.pread(img.fileno(), n, pos)
                    if len(data) != n:
                        raise FlashError(f"{image}: short read at byte {pos}")
                    part.update(data)
                    written.update(data)
                    _pwrite_all(dev_fd, data, pos, device.path)
                    done += n
                    if progress:
                        progress(done, total)
                if chksum and part.hexdigest() != chksum:
                    raise FlashError(f"{image}: bytes {offset}-{offset + length} do not match "
                                     "the block map's checksum; the image or its .bmap is "
                                     "corrupt")
        os.fsync(dev_fd)
    except OSError as e:
        raise FlashError(f"{device.path}: write failed: {e.strerror}") from None
    finally:
        os.close(dev_fd)
    expected = written.hexdigest()
    actual = _read_back(device.path, ranges)
    if actual != expected:
        raise FlashError(f"{device.path}: read-back SHA-256 {actual} differs from the image's "
                         f"{expected}; the card may be faulty or fake")
    LOG.info("wrote and verified %s on %s (sha256 %s)", human_size(total), device.path, expected)
    return expected


def _pwrite_all(fd: int, data: bytes, pos: int, path: Path) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        if n <= 0:
            raise FlashError(f"{path}: wrote nothing at byte {pos}; is the card full or locked?")
        view = view[n:]
        pos += n


def _read_back(path: Path, ranges: tuple[tuple[int, int, str], ...]) -> str:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise FlashError(f"{path}: cannot open to verify: {e.strerror}") from None
    try:
        # Read the card, not the page cache that still holds what we wrote.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for offset, length, _ in ranges:
            for pos, n in _chunks(offset, length):
                data = os.pread(fd, n, pos)
                if len(data) != n:
                    raise FlashError(f"{path}: short read at byte {pos} while verifying")
                h.update(data)
    except OSError as e:
        raise FlashError(f"{path}: read-back failed: {e.strerror}") from None
    finally:
        os.close(fd)
    return h.hexdigest()


def ask_terminal(question: str) -> bool:
    """Ask on the terminal; without one there is nobody to ask, which is a usage error."""
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for confirmation on; pass --yes to flash anyway")
    answer = input(f"{question} Type 'yes' to continue: ")
    return answer.strip().lower() == "yes"


class _Meter:
    """Progress on stderr, at most a few lines a second: done, total, throughput."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        print(f"\rflash: {human_size(done)} of {human_size(total)} "
              f"({100 * done // max(total, 1)}%), {human_size(int(rate))}/s   ",
              end="" if done < total else "\n", file=sys.stderr, flush=True)


def flash(image: Path, device_path: Path, *, yes: bool, allow_large: bool,
          confirm: Confirm = ask_terminal, system: System | None = None,
          progress: Callable[[int, int], None] | None = None) -> str:
    """Check, confirm, write and verify; returns the SHA-256 of the bytes written."""
    require_image(image)
    device = check_device(device_path, allow_large=allow_large, system=system)
    bmap_path = image.with_name(image.name + ".bmap")
    bmap = read_bmap(bmap_path) if bmap_path.is_file() else None
    what = f"{device.path} ({device.model}, {human_size(device.size)})"
    print(f"flash: {image} -> {what}" +
          (f", {human_size(bmap.mapped)} mapped per {bmap_path.name}" if bmap else ""),
          file=sys.stderr)
    if not yes and not confirm(f"Everything on {what} will be overwritten."):
        raise UsageError("not confirmed; nothing was written")
    LOG.info("flashing %s to %s", image, device.path)
    digest = write_image(image, device, bmap=bmap, progress=progress or _Meter())
    print(f"flash: verified, sha256 {digest}; you can remove the card", file=sys.stderr)
    return digest
