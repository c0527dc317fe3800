"""Reading and writing the partitions of a disk image without mounting it: the MBR table
parsed here, the ext4 root through `debugfs` (at the partition's byte offset, `IMG?offset=N`)
and the FAT boot partition through mtools (`IMG@@N`)."""

from __future__ import annotations

import logging
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from failberry.errors import FailberryError, UsageError
from failberry.image.runner import run

LOG = logging.getLogger(__name__)

SECTOR = 512
FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
LINUX_TYPE = 0x83
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_.+@:/-]*$")
_SAFE_TARGET = re.compile(r"^[A-Za-z0-9_.+@:/-]+$")
# ELF e_machine values of the architectures Raspberry Pi OS ships.
ELF_MACHINES = {0xB7: "arm64", 0x28: "armhf"}


class ImageError(FailberryError):
    """A disk image is not what we can customise (no MBR, no ext4 root, debugfs errors)."""


@dataclass(frozen=True)
class Partition:
    """One MBR partition: number, type byte, byte offset and size."""

    number: int
    type: int
    offset: int
    size: int


def read_mbr(image: Path) -> list[Partition]:
    """The primary partitions of an MBR-partitioned image."""
    with image.open("rb") as f:
        mbr = f.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise ImageError(f"{image}: no MBR partition table (is it a Raspberry Pi OS image?)")
    parts = []
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        ptype = entry[4]
        start, sectors = struct.unpack_from("<II", entry, 8)
        if ptype == 0xEE:
            raise ImageError(f"{image}: has a GPT partition table; Raspberry Pi OS images use MBR")
        if ptype and sectors:
            parts.append(Partition(i + 1, ptype, start * SECTOR, sectors * SECTOR))
    return parts


def require_image(path: Path, shown: Path | None = None) -> None:
    """UsageError unless `path` is an uncompressed image file (`shown`: the name the user
    gave, for the message)."""
    name = shown or path
    if path.is_dir():
        raise UsageError(f"{name}: is a directory; give the image file (e.g. {name}/failberry.img)")
    if not path.is_file():
        raise UsageError(f"{name}: no such image file")
    if path.suffix == ".xz":
        raise UsageError(f"{name}: compressed; decompress it first (`xz -dk {name}`)")


def boot_and_root(image: Path) -> tuple[Partition, Partition]:
    """The FAT boot partition and the Linux root partition, as Raspberry Pi OS lays them out."""
    parts = read_mbr(image)
    boot = next((p for p in parts if p.type in FAT_TYPES), None)
    root = next((p for p in parts if p.type == LINUX_TYPE), None)
    if boot is None or root is None:
        found = ", ".join(f"{p.number}: type 0x{p.type:02x}" for p in parts) or "none"
        raise ImageError(f"{image}: expected a FAT boot and a Linux root partition, found {found}")
    return boot, root


def _check_path(path: str) -> str:
    # debugfs splits its command lines on white space; our paths never need quoting.
    if not _SAFE_PATH.match(path):
        raise ImageError(f"{path!r}: cannot pass this path to debugfs")
    return path


@dataclass(frozen=True)
class DirEntry:
    """A name in an ext4 directory with its mode and owner."""

    name: str
    mode: int
    uid: int
    gid: int

    @property
    def is_dir(self) -> bool:
        """A directory."""
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        """A symbolic link."""
        return stat.S_ISLNK(self.mode)


class Ext4:
    """The ext4 file system of one partition of an image, through debugfs."""

    def __init__(self, image: Path, part: Partition) -> None:
        self.image = image
        self.spec = f"{image}?offset={part.offset}"
        self._dirs: dict[str, dict[str, DirEntry] | None] = {}

    def request(self, command: str) -> bytes:
        """Run one read-only debugfs request; its stdout."""
        return run(["debugfs", "-R", command, self.spec], capture=True).stdout

    def listdir(self, path: str) -> dict[str, DirEntry] | None:
        """A directory's entries, or None if it does not exist (or is not a directory)."""
        path = _check_path(path)
        if path not in self._dirs:
            proc = run(["debugfs", "-R", f"ls -p {path}", self.spec], capture=True,
                       whole_stderr=True)
            err = proc.stderr
            if "not found" in err or "Ext2 inode is not a directory" in err:
                self._dirs[path] = None
            else:
                entries = {}
                for line in proc.stdout.decode("utf-8", "replace").splitlines():
                    # /inode/mode/uid/gid/name/size/
                    fields = line.split("/")
                    if len(fields) >= 7 and fields[5] not in (".", ".."):
                        entries[fields[5]] = DirEntry(fields[5], int(fields[2], 8),
                                                      int(fields[3]), int(fields[4]))
                self._dirs[path] = entries
        return self._dirs[path]

    def lookup(self, path: str) -> DirEntry | None:
        """A path's entry in its parent directory, or None."""
        parent, _, name = path.rstrip("/").rpartition("/")
        entries = self.listdir(parent or "/")
        return entries.get(name) if entries else None

    def dump(self, path: str, dest: Path) -> bool:
        """Copy a file out keeping mode and owner (`dump -p`); False if it does not exist."""
        entry = self.lookup(path)
        if entry is None or not stat.S_ISREG(entry.mode):
            return False
        run(["debugfs", "-R", f"dump -p {_check_path(path)} {dest}", self.spec])
        if not dest.exists():
            raise ImageError(f"{self.image}: debugfs could not copy out {path}")
        return True

    def read(self, path: str) -> bytes:
        """The content of a file (`cat`)."""
        return self.request(f"cat {_check_path(path)}")

    def apply(self, commands: list[str]) -> None:
        """Run debugfs -w over a script; any error line fails the whole step."""
        if not commands:
            return
        script = "\n".join(commands) + "\n"
        proc = run(["debugfs", "-w", "-f", "-", self.spec], stdin=script.encode("utf-8"),
                   whole_stderr=True)
        errors = [line for line in proc.stderr.splitlines()
                  if line.strip() and not line.startswith("debugfs ")]
        self._dirs.clear()
        if errors:
            raise ImageError(f"{self.image}: debugfs failed: {errors[0]} "
                             f"({len(errors)} error(s) in {len(commands)} commands)")

    def check(self) -> None:
        """e2fsck in read-only mode: the file system is consistent after our writes."""
        run(["e2fsck", "-f", "-n", self.spec])

    def arch(self) -> str:
        """The Debian architecture of the system inside, from dpkg's ELF header."""
        head = self.read("/usr/bin/dpkg")[:20]
        if head[:4] != b"\x7fELF":
            raise ImageError(f"{self.image}: /usr/bin/dpkg is missing or not an ELF program")
        (machine,) = struct.unpack_from("<H", head, 18)
        if machine not in ELF_MACHINES:
            raise ImageError(f"{self.image}: unsupported architecture (ELF machine {machine})")
        return ELF_MACHINES[machine]


def ext4_commands(path: str, kind: str, *, source: Path | None = None, target: str = "",
                  mode: int = 0o644, uid: int = 0, gid: int = 0,
                  exists: DirEntry | None = None) -> list[str]:
    """The debugfs commands that make `path` a file, dir or symlink with this mode and owner."""
    path = _check_path(path)
    cmds = []
    if kind == "dir":
        if exists is not None and exists.is_dir:
            return []  # keep an existing directory's mode and owner
        if exists is not None:
            cmds.append(f"rm {path}")
        cmds.append(f"mkdir {path}")
        type_bits = stat.S_IFDIR
    elif kind == "symlink":
        if exists is not None:
            cmds.append(f"rm {path}")
        if not _SAFE_TARGET.match(target):
            raise ImageError(f"{target!r}: cannot pass this symlink target to debugfs")
        return [*cmds, f"symlink {path} {target}"]
    else:
        if source is None:
            raise ImageError(f"{path}: a file needs its source")
        if exists is not None and exists.is_dir:
            raise ImageError(f"{path}: is a directory in the image; cannot replace it")
        if exists is not None:
            cmds.append(f"rm {path}")
        cmds.append(f"write {_check_path(str(source))} {path}")
        type_bits = stat.S_IFREG
    cmds += [f"sif {path} mode 0{type_bits | mode:o}", f"sif {path} uid {uid}",
             f"sif {path} gid {gid}"]
    return cmds


class Fat:
    """The FAT boot partition of an image, through mtools."""

    def __init__(self, image: Path, part: Partition) -> None:
        self.target = f"{image}@@{part.offset}"
        # mtools refuses FAT geometries it finds odd unless told not to check.
        self.env = {"MTOOLS_SKIP_CHECK": "1"}

    def write(self, name: str, data: bytes, staging: Path) -> None:
        """Put a file in the partition's top directory, replacing one of the same name."""
        src = staging / name
        src.write_bytes(data)
        run(["mcopy", "-o", "-i", self.target, src, f"::/{name}"], env=self.env)

    def read(self, name: str) -> bytes | None:
        """A file from the top directory, or None if it is not there."""
        proc = run(["mtype", "-i", self.target, f"::/{name}"], env=self.env, check=False,
                   capture=True)
        return proc.stdout if proc.returncode == 0 else None
