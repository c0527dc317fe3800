"""The base root file system: Debian bootstrapped with mmdebstrap for the board's
architecture (through qemu-user binfmt), cached as a tarball keyed by everything that shapes
it, and unpacked into a directory for each build."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from failberry.config import Config
from failberry.errors import CommandFailed, FailberryError
from failberry.image.runner import Runner

LOG = logging.getLogger(__name__)

# Bump when the way the base is made changes in a way its inputs do not show.
BUILDER_VERSION = "1"
ROOT_LABEL = "fbroot"
BOOT_LABEL = "FBBOOT"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# Debian architecture -> binfmt_misc entry name that qemu-user-static registers.
QEMU_BINFMT = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}
# Serial console: Pi 3/4/Zero 2 W (arm64 kernel) use the mini UART ttyS1; the Pi 2 ttyAMA0.
SERIAL_CONSOLE = {"arm64": "ttyS1,115200", "armhf": "ttyAMA0,115200"}


class BinfmtError(FailberryError):
    """qemu-user cannot run the image's binaries on this machine."""


class InitramfsIncomplete(FailberryError):
    """An initramfs lacks a module the boards need to find their root file system."""


def initramfs_problem(stderr_tail: str) -> str:
    """The line hooks/check-initramfs.sh printed about missing modules, if it did."""
    return next((line.removeprefix("failberry: ") for line in stderr_tail.splitlines()
                 if line.startswith("failberry: initramfs ") and "lacks" in line), "")


@dataclass(frozen=True)
class BaseSpec:
    """Everything that shapes the base root file system; its digest names the cache entry."""

    suite: str
    arch: str
    mirror: str
    packages: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # (name, content) of hooks and uploaded files

    def digest(self) -> str:
        """A stable hash of the spec (the cache key)."""
        blob = json.dumps({"builder": BUILDER_VERSION, "suite": self.suite, "arch": self.arch,
                           "mirror": self.mirror, "packages": list(self.packages),
                           "files": [list(f) for f in self.files]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def file(self, name: str) -> str:
        """The content of one of the spec's files."""
        return dict(self.files)[name]


def read_list(path: Path) -> list[str]:
    """Lines of a list file without `#` comments and blanks."""
    out = []
    for line in path.read_text().splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            out.append(item)
    return out


def base_spec(cfg: Config, recipe: Path) -> BaseSpec:
    """The base for `cfg`'s board from the recipe directory (the package's `data/image/`)."""
    arch = cfg.image.board.arch
    packages = set(read_list(recipe / "packages.txt"))
    packages |= set(read_list(recipe / f"packages-{arch}.txt"))
    packages |= set(cfg.image.extra_packages)
    subst = {"root_label": ROOT_LABEL, "boot_label": BOOT_LABEL,
             "consoles": f"tty0 {SERIAL_CONSOLE[arch]}"}
    files = (
        ("essential.sh", (recipe / "hooks" / "essential.sh").read_text()),
        ("customize.sh", (recipe / "hooks" / "customize.sh").read_text()),
        ("check-initramfs.sh", (recipe / "hooks" / "check-initramfs.sh").read_text()),
        ("dpkg-excludes", (recipe / "dpkg-excludes.txt").read_text()),
        ("initramfs-modules", "\n".join(read_list(recipe / "initramfs-modules.txt")) + "\n"),
        ("raspi-firmware", string.Template((recipe / "raspi-firmware.default").read_text())
         .substitute(subst)),
        ("fstab", string.Template((recipe / "fstab").read_text()).substitute(subst)),
    )
    return BaseSpec(cfg.image.suite, arch, cfg.image.mirror, tuple(sorted(packages)), files)


def binfmt_status(arch: str) -> str:
    """Empty when qemu-user can run `arch` binaries; otherwise what is missing."""
    name = QEMU_BINFMT[arch]
    if not (BINFMT_DIR / "status").exists():
        return f"{BINFMT_DIR} is not mounted"
    entry = BINFMT_DIR / name
    if not entry.exists():
        return f"{entry} is not registered"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"{entry} is disabled"
    flags = re.search(r"^flags: *(\S*)", text, re.MULTILINE)
    # F ("fix binary"): the interpreter is opened at registration, so it works inside the
    # chroot and the user namespace mmdebstrap runs in, where the host path is not visible.
    if not flags or "F" not in flags.group(1):
        return f"{entry} lacks the F (fix-binary) flag; install qemu-user-static"
    return ""


def ensure_binfmt(runner: Runner, arch: str) -> None:
    """Make qemu-user run `arch` binaries (mount binfmt_misc, enable the entry) or explain."""
    problem = binfmt_status(arch)
    if not problem:
        LOG.info("binfmt: %s is registered", QEMU_BINFMT[arch])
        return
    LOG.info("binfmt: %s; setting it up", problem)
    if not (BINFMT_DIR / "status").exists():
        runner.run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR], check=False)
    runner.run(["update-binfmts", "--enable", QEMU_BINFMT[arch]], check=False)
    problem = binfmt_status(arch)
    if problem:
        raise BinfmtError(
            f"cannot run {arch} programs through qemu-user: {problem}. As root: "
            f"`apt-get install qemu-user-static binfmt-support`, "
            f"`mount -t binfmt_misc binfmt_misc {BINFMT_DIR}`, "
            f"`update-binfmts --enable {QEMU_BINFMT[arch]}`")
    LOG.info("binfmt: %s enabled", QEMU_BINFMT[arch])


def cached_base(cache_dir: Path, spec: BaseSpec) -> Path:
    """Where the base tarball for `spec` lives in the cache (it may not exist yet)."""
    return cache_dir / f"base-{spec.suite}-{spec.arch}-{spec.digest()}.tar"


class InstallProgress:
    """Turns mmdebstrap's verbose output into a package count, logged every few seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.unpacked = 0
        self.configured = 0
        self._clock = clock
        self._last = clock()

    def line(self, text: str) -> None:
        """Feed one line of output."""
        if text.startswith("Unpacking "):
            self.unpacked += 1
        elif text.startswith("Setting up "):
            self.configured += 1
        elif text.startswith(("I: ", "E: ", "W: ")):
            LOG.info("mmdebstrap: %s", text[3:])
            return
        elif text.startswith("failberry: "):  # the hooks' own findings (initramfs check)
            LOG.info("%s", text.removeprefix("failberry: "))
            return
        else:
            return
        now = self._clock()
        if now - self._last >= 10:
            self._last = now
            LOG.info("packages: %d unpacked, %d set up", self.unpacked, self.configured)


def bootstrap(runner: Runner, spec: BaseSpec, dest: Path, workdir: Path, *,
              epoch: int) -> None:
    """Run mmdebstrap for `spec`, writing the base tarball to `dest` (atomically)."""
    hooks = workdir / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    for name, content in spec.files:
        (hooks / name).write_text(content)
    q = shlex.quote
    partial = dest.with_name(dest.name + f".partial-{os.getpid()}")
    argv: list[str | Path] = [
        "mmdebstrap", "--verbose", "--mode=unshare", "--variant=apt", f"--arch={spec.arch}",
        "--components=main,non-free-firmware", "--format=tar",
        "--aptopt=APT::Install-Recommends \"false\"",
        f"--dpkgopt={hooks / 'dpkg-excludes'}",
        f"--include={','.join(spec.packages)}",
        f"--essential-hook=sh {q(str(hooks / 'essential.sh'))} \"$1\"",
        f"--customize-hook=upload {q(str(hooks / 'raspi-firmware'))} /etc/default/raspi-firmware",
        f"--customize-hook=upload {q(str(hooks / 'initramfs-modules'))} "
        "/etc/initramfs-tools/modules",
        f"--customize-hook=upload {q(str(hooks / 'fstab'))} /etc/fstab",
        f"--customize-hook=sh {q(str(hooks / 'customize.sh'))} \"$1\"",
        spec.suite, partial, spec.mirror,
    ]
    progress = InstallProgress()
    LOG.info("bootstrapping Debian %s %s with %d packages (a cold build takes minutes)",
             spec.suite, spec.arch, len(spec.packages))
    # mmdebstrap's scratch root and gpg home go into the build's scratch directory, which
    # the build removes even when mmdebstrap is interrupted before it cleans up.
    tmpdir = workdir / "tmp"
    tmpdir.mkdir(exist_ok=True)
    try:
        try:
            runner.run(argv, env={"SOURCE_DATE_EPOCH": str(epoch), "TMPDIR": str(tmpdir)},
                       on_line=progress.line)
        except CommandFailed as e:
            if problem := initramfs_problem(e.stderr_tail):
                raise InitramfsIncomplete(problem) from None
            raise
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    LOG.info("base cached: %s (%d packages set up)", dest, progress.configured)


def remove_stale_partials(cache_dir: Path) -> None:
    """Partial base tarballs of builds that were killed (their pid is gone)."""
    for stale in cache_dir.glob("base-*.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            LOG.info("removing %s left by a killed build", stale.name)
            stale.unlink(missing_ok=True)


def unpack(runner: Runner, tarball: Path, root: Path) -> None:
    """Unpack a base tarball into `root`, keeping owners, modes, xattrs and times."""
    root.mkdir(parents=True, exist_ok=True)
    runner.run(["tar", "-C", root, "--numeric-owner", "--same-owner", "-p", "--xattrs",
                "--xattrs-include=*", "-xf", tarball])
