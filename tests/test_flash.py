"""`failberry flash` against real block devices: loop devices made from temporary files, one of
them with a mounted ext4 file system, one partitioned; refusals and a verified write."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from failberry.errors import UsageError
from failberry.image.flash import (
    FlashError,
    check_device,
    flash,
    read_bmap,
    write_image,
)

MiB = 1024**2


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


class Loops:
    """Loop devices and mounts a test makes; all undone at teardown, also after failures."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.devices: list[str] = []
        self.mounts: list[Path] = []

    def attach(self, size: int, *, fill: bytes = b"\0", partscan: bool = False,
               name: str = "disk") -> Path:
        backing = self.tmp / f"{name}.raw"
        with backing.open("wb") as f:
            if fill == b"\0":
                f.truncate(size)
            else:
                f.write(fill * size)
        args = ["losetup", "-f", "--show"] + (["-P"] if partscan else []) + [str(backing)]
        dev = sh(*args).strip()
        self.devices.append(dev)
        return Path(dev)

    def mount(self, dev: Path) -> Path:
        where = self.tmp / f"mnt{len(self.mounts)}"
        where.mkdir()
        sh("mount", str(dev), str(where))
        self.mounts.append(where)
        return where

    def close(self) -> None:
        for where in reversed(self.mounts):
            subprocess.run(["umount", str(where)], timeout=60)
        for dev in reversed(self.devices):
            subprocess.run(["losetup", "-d", dev], timeout=60)


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    lo = Loops(tmp_path)
    try:
        yield lo
    finally:
        lo.close()


def make_image(path: Path, size: int) -> bytes:
    data = hashlib.shake_256(path.name.encode()).digest(size)
    path.write_bytes(data)
    return data


def test_regular_file_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "fb.img"
    make_image(image, MiB)
    target = tmp_path / "notadisk"
    target.write_bytes(b"precious")
    proc = run_cli(["flash", str(image), str(target), "--yes"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"failberry: error: {target}: is a regular file, not a whole "
                                   "disk such as /dev/sdX or /dev/mmcblk0")
    assert target.read_bytes() == b"precious"


def test_character_device_and_missing_device_are_refused() -> None:
    with pytest.raises(UsageError, match="is a character device"):
        check_device(Path("/dev/null"), allow_large=False)
    with pytest.raises(UsageError, match="no such device"):
        check_device(Path("/dev/failberry-no-such-disk"), allow_large=False)


def test_missing_image_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli(["flash", str(tmp_path / "nope.img"), "/dev/null", "--yes"])
    assert proc.returncode == 2
    assert "nope.img: no such image file" in proc.stderr


@pytest.mark.parametrize("command", [["flash", "{d}", "/dev/null", "--yes"],
                                     ["boot-test", "{d}"]])
def test_a_directory_for_the_image_says_so(tmp_path: Path, command: list[str]) -> None:
    # e.g. the output directory of a build instead of the image in it
    proc = run_cli([a.format(d=tmp_path) for a in command])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"failberry: error: {tmp_path}: is a directory; give the image file "
        f"(e.g. {tmp_path}/failberry.img)"]


def test_block_map_is_parsed(tmp_path: Path) -> None:
    bmap = tmp_path / "x.bmap"
    bmap.write_text("""<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> 10000 </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> 3 </BlocksCount>
    <MappedBlocksCount> 2 </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BmapFileChecksum> 00 </BmapFileChecksum>
    <BlockMap>
        <Range chksum="aa"> 0 </Range>
        <Range chksum="bb"> 2 </Range>
    </BlockMap>
</bmap>
""")
    m = read_bmap(bmap)
    assert m.ranges == ((0, 4096, "aa"), (8192, 10000 - 8192, "bb"))
    assert m.mapped == 4096 + 1808
    bmap.write_text("<bmap><BlockSize>x</BlockSize></bmap>")
    with pytest.raises(UsageError, match="malformed block map"):
        read_bmap(bmap)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_loop_device_accepts_the_image_and_verifies_it(loops: Loops, tmp_path: Path) -> None:
    dev = loops.attach(16 * MiB, fill=b"\xff")
    image = tmp_path / "fb.img"
    data = make_image(image, 5 * MiB + 512)
    proc = run_cli(["flash", str(image), str(dev), "--yes"])
    assert proc.returncode == 0, proc.stderr
    assert f"loop device on {tmp_path / 'disk.raw'}" in proc.stderr
    digest = hashlib.sha256(data).hexdigest()
    assert f"verified, sha256 {digest}" in proc.stderr
    written = (tmp_path / "disk.raw").read_bytes()
    assert written[:len(data)] == data
    assert set(written[len(data):]) == {0xFF}  # nothing past the image touched


@pytest.mark.root
@pytest.mark.timeout(120)
def test_block_map_writes_only_the_mapped_ranges(loops: Loops, tmp_path: Path) -> None:
    image = tmp_path / "sparse.img"
    with image.open("wb") as f:
        f.truncate(8 * MiB)
        f.seek(MiB)
        f.write(b"A" * 64 * 1024)
        f.seek(6 * MiB)
        f.write(b"B" * 4096)
    sh("bmaptool", "create", "-o", f"{image}.bmap", str(image))
    dev = loops.attach(8 * MiB, fill=b"\xee")
    digest = flash(image, dev, yes=True, allow_large=False)
    disk = (tmp_path / "disk.raw").read_bytes()
    assert disk[MiB:MiB + 64 * 1024] == b"A" * 64 * 1024
    assert disk[6 * MiB:6 * MiB + 4096] == b"B" * 4096
    assert disk[:4096] == b"\xee" * 4096  # a hole: left as it was, as bmaptool does
    mapped = read_bmap(image.with_name("sparse.img.bmap"))
    expect = hashlib.sha256()
    for offset, length, _ in mapped.ranges:
        expect.update(image.read_bytes()[offset:offset + length])
    assert digest == expect.hexdigest()


@pytest.mark.root
@pytest.mark.timeout(120)
def test_corrupt_image_is_caught_by_the_block_map(loops: Loops, tmp_path: Path) -> None:
    image = tmp_path / "fb.img"
    make_image(image, 2 * MiB)
    sh("bmaptool", "create", "-o", f"{image}.bmap", str(image))
    with image.open("r+b") as f:
        f.seek(MiB)
        f.write(b"corrupted")
    dev = loops.attach(4 * MiB)
    with pytest.raises(FlashError, match="do not match the block map's checksum"):
        flash(image, dev, yes=True, allow_large=False)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_mounted_device_is_refused(loops: Loops, tmp_path: Path) -> None:
    dev = loops.attach(32 * MiB)
    sh("mkfs.ext4", "-q", str(dev))
    where = loops.mount(dev)
    (where / "keep").write_text("data")
    image = tmp_path / "fb.img"
    make_image(image, MiB)
    proc = run_cli(["flash", str(image), str(dev), "--yes"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"failberry: error: {dev}: {dev} is mounted on {where}; "
                                   f"unmount it first (umount {dev})")
    assert (where / "keep").read_text() == "data"


@pytest.mark.root
@pytest.mark.timeout(120)
def test_partition_and_disk_with_a_mounted_partition_are_refused(loops: Loops,
                                                                  tmp_path: Path) -> None:
    dev = loops.attach(32 * MiB, partscan=True)
    subprocess.run(["sfdisk", "-q", str(dev)], input="label: dos\nstart=2048, type=83\n",
                   text=True, check=True, timeout=60)
    part = Path(f"{dev}p1")
    for _ in range(50):
        if part.exists():
            break
        subprocess.run(["partx", "-a", str(dev)], capture_output=True, timeout=30)
        time.sleep(0.1)  # devtmpfs makes the node asynchronously
    if not part.exists():
        pytest.skip("the kernel made no partition device for the loop device")
    with pytest.raises(UsageError, match=f"is partition 1 of {dev}; give the whole disk {dev}"):
        check_device(part, allow_large=False)
    sh("mkfs.ext4", "-q", str(part))
    where = loops.mount(part)
    with pytest.raises(UsageError, match=f"{part} is mounted on {where}"):
        check_device(dev, allow_large=False)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_large_device_needs_allow_large(loops: Loops) -> None:
    dev = loops.attach(600 * 1024**3)  # sparse: costs nothing
    with pytest.raises(UsageError, match="larger than any sane SD card"):
        check_device(dev, allow_large=False)
    assert check_device(dev, allow_large=True).size == 600 * 1024**3


@pytest.mark.root
def test_the_running_systems_disk_is_refused() -> None:
    source = sh("findmnt", "-n", "-o", "SOURCE", "/").strip()
    if not source.startswith("/dev/"):
        pytest.skip(f"root is on {source}, not a block device")
    parent = sh("lsblk", "-n", "-d", "-o", "PKNAME", source).strip()
    disk = Path(f"/dev/{parent}") if parent else Path(source)
    with pytest.raises(UsageError, match="running system's root"):
        check_device(disk, allow_large=True)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_without_yes_it_asks_and_without_a_terminal_refuses(loops: Loops,
                                                            tmp_path: Path) -> None:
    dev = loops.attach(4 * MiB)
    image = tmp_path / "fb.img"
    make_image(image, MiB)
    proc = subprocess.run([sys.executable, "-m", "failberry", "flash", str(image), str(dev)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no terminal to ask for confirmation on; pass --yes" in proc.stderr
    questions: list[str] = []

    def no(question: str) -> bool:
        questions.append(question)
        return False

    with pytest.raises(UsageError, match="not confirmed; nothing was written"):
        flash(image, dev, yes=False, allow_large=False, confirm=no)
    assert questions == [f"Everything on {dev} (loop device on {tmp_path / 'disk.raw'}, "
                         "4.0 MiB) will be overwritten."]
    assert set((tmp_path / "disk.raw").read_bytes()) == {0}


@pytest.mark.root
@pytest.mark.timeout(120)
def test_image_larger_than_the_device_is_refused(loops: Loops, tmp_path: Path) -> None:
    dev = loops.attach(MiB)
    image = tmp_path / "fb.img"
    make_image(image, 2 * MiB)
    device = check_device(dev, allow_large=False)
    with pytest.raises(UsageError, match="does not fit"):
        write_image(image, device)
