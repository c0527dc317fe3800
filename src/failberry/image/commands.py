"""`failberry build`, `flash`, `boot-test`. `build` is a flat list of `verb_noun(ctx)` steps
(pipeline.py); each reads and fills the one BuildContext."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from failberry import config as config_mod
from failberry.config import Config
from failberry.config_render import dump_toml
from failberry.errors import UsageError
from failberry.fileio import write_atomic
from failberry.image import assemble, rootfs
from failberry.image.pipeline import Step, Timeline, run_steps
from failberry.image.runner import Runner, ToolMissing
from failberry.image.sources import INSTALLED, Sources
from failberry.units import human_size

if TYPE_CHECKING:
    from failberry.image.customise import CustomiseResult

LOG = logging.getLogger(__name__)

BUILD_TOOLS = ("mmdebstrap", "tar", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs",
               "e2fsck", "update-binfmts")
BASE_IMAGE_TOOLS = ("sfdisk", "mcopy", "debugfs", "e2fsck", "xz")
COMPRESS_TOOLS = ("xz", "bmaptool")


@dataclass
class BuildContext:
    """What the build steps share: inputs first, then what earlier steps produced."""

    cfg: Config
    output: Path
    cache_dir: Path
    runner: Runner
    compress: bool = False
    base_image: Path | None = None
    sources: Sources = INSTALLED
    epoch: int = 0
    workdir: Path = Path()
    spec: rootfs.BaseSpec | None = None
    base_tar: Path = Path()
    customised: CustomiseResult | None = None
    artefacts: list[Path] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The unpacked root file system."""
        return self.workdir / "root"

    @property
    def boot(self) -> Path:
        """The boot partition's files."""
        return self.workdir / "boot"

    @property
    def partial(self) -> Path:
        """The image while it is being written (renamed to `output` when complete)."""
        return self.workdir / "image.raw"


def default_cache_dir() -> Path:
    """/var/cache/failberry for root, else the XDG cache."""
    if os.geteuid() == 0:
        return Path("/var/cache/failberry")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "failberry"


# --------------------------------------------------------------------------------- steps


def check_tools(ctx: BuildContext) -> None:
    """Every program the build runs is installed (one message listing the missing ones)."""
    needed = (BASE_IMAGE_TOOLS if ctx.base_image else BUILD_TOOLS) + (
        COMPRESS_TOOLS if ctx.compress else ())
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        raise ToolMissing(missing, "Debian packages in scripts/apt/build.txt")
    if os.geteuid() != 0 and not ctx.base_image:
        raise UsageError("failberry build: run as root (files in the image belong to root and "
                         "other users; the build needs binfmt_misc for qemu-user)")


def make_workdir(ctx: BuildContext) -> None:
    """A scratch directory beside the output (same file system: the final rename is atomic)."""
    out = ctx.output
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.build-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            LOG.info("removing %s left by an earlier, killed build", stale)
            shutil.rmtree(stale, ignore_errors=True)
    ctx.workdir = out.parent / f".{out.name}.build-{os.getpid()}"
    ctx.workdir.mkdir()


def remove_workdir(ctx: BuildContext) -> None:
    """Teardown: the scratch directory and whatever is left in it (a partial image)."""
    if ctx.workdir != Path() and ctx.workdir.exists():
        shutil.rmtree(ctx.workdir)
        LOG.info("removed %s", ctx.workdir)


def check_binfmt(ctx: BuildContext) -> None:
    """qemu-user can run the board's binaries (sets binfmt_misc up, or says how)."""
    rootfs.ensure_binfmt(ctx.runner, ctx.cfg.image.board.arch)


def bootstrap_base(ctx: BuildContext) -> None:
    """The package-installed base from the cache, or mmdebstrap it into the cache."""
    ctx.spec = rootfs.base_spec(ctx.cfg, ctx.sources.recipe)
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    ctx.base_tar = rootfs.cached_base(ctx.cache_dir, ctx.spec)
    with _locked(ctx.cache_dir / ".lock"):
        rootfs.remove_stale_partials(ctx.cache_dir)
        if ctx.base_tar.exists():
            LOG.info("base: cached %s (%s)", ctx.base_tar.name,
                     human_size(ctx.base_tar.stat().st_size))
        else:
            LOG.info("base: %s is not cached yet", ctx.base_tar.name)
            rootfs.bootstrap(ctx.runner, ctx.spec, ctx.base_tar, ctx.workdir,
                             epoch=int(time.time()))
    # The base's own time is the build's SOURCE_DATE_EPOCH unless one is given: two builds
    # from one cache entry then agree on every timestamp.
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if env_epoch.isdigit():
        ctx.epoch = int(env_epoch)
    elif ctx.base_tar.exists():
        ctx.epoch = int(ctx.base_tar.stat().st_mtime)
    LOG.info("SOURCE_DATE_EPOCH=%d", ctx.epoch)


def unpack_base(ctx: BuildContext) -> None:
    """The cached base into the scratch directory."""
    rootfs.unpack(ctx.runner, ctx.base_tar, ctx.root)


def customise_rootfs(ctx: BuildContext) -> None:
    """failberry's files, units, users and keys (image/customise.py)."""
    from failberry.image import customise

    ctx.customised = customise.customise_rootfs(ctx.cfg, ctx.root, out_dir=ctx.output.parent,
                                                sources=ctx.sources)


def clamp_times(ctx: BuildContext) -> None:
    """Every timestamp at most SOURCE_DATE_EPOCH (reproducible file systems)."""
    changed = assemble.clamp_times(ctx.root, ctx.epoch) + assemble.clamp_times(ctx.boot,
                                                                               ctx.epoch)
    LOG.info("clamped %d modification times to %d", changed, ctx.epoch)


def split_boot(ctx: BuildContext) -> None:
    """/boot/firmware's files move to the FAT partition; the mount point stays."""
    assemble.split_boot(ctx.root, ctx.boot)


def assemble_image(ctx: BuildContext) -> None:
    """Partition table and both file systems, written into the partial image."""
    layout = assemble.plan_layout(ctx.cfg.image.size)
    assert ctx.spec is not None
    seed = ctx.spec.digest() + dump_toml(ctx.cfg, reveal_secrets=False)
    ids = assemble.derive_ids(seed)
    started = time.monotonic()
    assemble.make_image(ctx.runner, ctx.partial, layout, ids, boot=ctx.boot, root=ctx.root,
                        epoch=ctx.epoch)
    used = _allocated(ctx.partial)
    secs = max(time.monotonic() - started, 1e-3)
    LOG.info("wrote %s of data into a %s image in %.1fs (%s/s)", human_size(used),
             human_size(layout.size), secs, human_size(used / secs))


def publish_image(ctx: BuildContext) -> None:
    """Checksum, then rename the complete image to the output name."""
    sha = ctx.output.with_name(ctx.output.name + ".sha256")
    digest = assemble.sha256_file(ctx.partial, assemble.Throughput(
        "sha256", ctx.partial.stat().st_size))
    os.replace(ctx.partial, ctx.output)
    write_atomic(sha, f"{digest}  {ctx.output.name}\n")
    ctx.artefacts += [ctx.output, sha]
    LOG.info("image: %s (sha256 %s)", ctx.output, digest[:16])


def compress_image(ctx: BuildContext) -> None:
    """With --compress: OUT.xz (multi-threaded) and OUT.bmap."""
    if not ctx.compress:
        return
    xz = ctx.output.with_name(ctx.output.name + ".xz")
    bmap = ctx.output.with_name(ctx.output.name + ".bmap")
    assemble.make_bmap(ctx.runner, ctx.output, bmap)
    assemble.compress_xz(ctx.runner, ctx.output, xz)
    ctx.artefacts += [bmap, xz]


BUILD_STEPS: tuple[Step[BuildContext], ...] = (
    Step("check_tools", check_tools),
    Step("make_workdir", make_workdir, remove_workdir),
    Step("check_binfmt", check_binfmt),
    Step("bootstrap_base", bootstrap_base),
    Step("unpack_base", unpack_base),
    Step("customise_rootfs", customise_rootfs),
    Step("split_boot", split_boot),
    Step("clamp_times", clamp_times),
    Step("assemble_image", assemble_image),
    Step("publish_image", publish_image),
    Step("compress_image", compress_image),
)


def customise_base_image(ctx: BuildContext) -> None:
    """--base-image: a Raspberry Pi OS image customised in place, unmounted (baseimage.py)."""
    from failberry.image.baseimage import customise_base_image as customise

    assert ctx.base_image is not None
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    ctx.customised = customise(ctx.cfg, ctx.base_image, ctx.partial,
                               out_dir=ctx.output.parent, cache_dir=ctx.cache_dir,
                               sources=ctx.sources)


BASE_IMAGE_STEPS: tuple[Step[BuildContext], ...] = (
    Step("check_tools", check_tools),
    Step("make_workdir", make_workdir, remove_workdir),
    Step("customise_base_image", customise_base_image),
    Step("publish_image", publish_image),
    Step("compress_image", compress_image),
)


def build(ctx: BuildContext) -> Timeline:
    """Run the build steps on `ctx` (the base-image steps with --base-image)."""
    return run_steps(BASE_IMAGE_STEPS if ctx.base_image else BUILD_STEPS, ctx)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock: two builds never bootstrap the same cache entry at once."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


# ------------------------------------------------------------------------------ commands


def cmd_build(args: argparse.Namespace) -> int:
    """Build an image."""
    # A SIGTERM (a CI timeout, systemd) unwinds like Ctrl-C: the teardowns run.
    signal.signal(signal.SIGTERM, _interrupt)
    cfg = config_mod.load(args.config)
    base_image = args.base_image.resolve() if args.base_image else None
    if base_image is not None and not base_image.is_file():
        raise UsageError(f"--base-image: {args.base_image}: no such file")
    ctx = BuildContext(cfg=cfg, output=args.output.resolve(),
                       cache_dir=(args.cache_dir or default_cache_dir()).resolve(),
                       runner=Runner(), compress=args.compress,
                       base_image=base_image)
    started = time.monotonic()
    timeline = build(ctx)
    print(summary(ctx, timeline, time.monotonic() - started))
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def summary(ctx: BuildContext, timeline: Timeline, seconds: float) -> str:
    """What was built, where, and how to flash it and log in."""
    lines = [f"failberry build: done in {seconds:.0f}s", *timeline.lines(), ""]
    for path in ctx.artefacts:
        lines.append(f"  {path}  ({human_size(path.stat().st_size)})")
    ssh = ctx.customised.ssh_command if ctx.customised else "ssh <admin>@<hostname>.local"
    lines += ["", "Flash it to an SD card (all data on the card is lost):",
              f"  failberry flash {ctx.output} /dev/sdX",
              "Try it first under QEMU:",
              f"  failberry boot-test {ctx.output}"
              + (f" --ssh-key {ctx.customised.generated_key}"
                 if ctx.customised and ctx.customised.generated_key else ""),
              "Boot the Pi with it and log in (keys only, no password):", f"  {ssh}"]
    return "\n".join(lines)


def cmd_flash(args: argparse.Namespace) -> int:
    """Flash an image: checked, confirmed, written (bmap-aware) and verified."""
    from failberry.image.flash import flash

    flash(args.image, args.device, yes=args.yes, allow_large=args.allow_large)
    return 0


def cmd_boot_test(args: argparse.Namespace) -> int:
    """Boot-test an image."""
    from failberry.image.boottest import BootTestOptions, boot_test

    # SIGTERM unwinds like Ctrl-C, so QEMU is stopped and the scratch directory removed.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.console is not None and not args.console.parent.is_dir():
        raise UsageError(f"--console {args.console}: no directory {args.console.parent}")
    report = boot_test(BootTestOptions(
        image=args.image, timeout=args.timeout, machine=args.machine, ssh_key=args.ssh_key,
        hang_kernel=args.hang_kernel, idle_window=args.idle_window,
        execs=tuple(args.execs)))
    print(report.render())
    if args.console is not None:
        try:
            report.write_console(args.console)
        except OSError as e:
            raise UsageError(f"--console {args.console}: {e.strerror or e}") from None
    if not report.ok:
        sys.stdout.flush()
        return 1
    return 0
