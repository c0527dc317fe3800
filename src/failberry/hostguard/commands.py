"""`failberry hostguard install | uninstall | check | watch`. Standard library only: a server
gets this with `pip install failberry` and none of the router's libraries."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from failberry import config
from failberry.config import HostguardConfig
from failberry.errors import UsageError
from failberry.hostguard import netconsole, nvme, sysctls, watcher
from failberry.procsys import SysctlError

LOG = logging.getLogger(__name__)


def load_config(path: Path | None) -> HostguardConfig:
    """`[hostguard]` from `-c FILE`, or the defaults without it."""
    if path is None:
        return HostguardConfig()
    return config.load_hostguard(path)


def _root(args: argparse.Namespace) -> Path:
    root: Path | None = args.root
    if root is not None and not root.is_dir():
        raise UsageError(f"--root: {root} is not a directory")
    return root if root is not None else Path("/")


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """A file we cannot write (not root, a read-only /etc): one line naming it, exit 1."""
    try:
        yield
    except OSError as e:
        raise SysctlError(f"cannot write {e.filename or '?'}: {e.strerror or e}") from None


def _proc(args: argparse.Namespace, doing: str = "writing") -> sysctls.ProcSys | None:
    proc = sysctls.live_procsys(args.root)
    if args.root is not None and proc is None:
        print(f"note: {args.root}/proc/sys is not a test tree; {doing} files only")
    return proc


def _print_changes(changes: list[sysctls.Change], dry_run: bool) -> None:
    if not changes:
        print("nothing to change")
    for change in changes:
        print(f"{'would ' if dry_run else ''}{change.what}")


def _nvme_note(root: Path) -> None:
    advice = nvme.check(root)
    if advice is not None and advice.advice:
        print(f"note: {advice.advice}")


def _netconsole(cfg: HostguardConfig, root: Path, dry_run: bool, live: bool) -> None:
    if not cfg.netconsole:
        return
    netconsole.setup(cfg.netconsole, root, dry_run=dry_run, live=live)


def cmd_install(args: argparse.Namespace) -> int:
    """Write the sysctl.d drop-in and apply the values live (not with --root/--dry-run)."""
    cfg = load_config(args.config)
    root = _root(args)
    with _writing():
        changes = sysctls.install(cfg, root, _proc(args), dry_run=args.dry_run)
    _print_changes(changes, args.dry_run)
    for key, (value, path) in sorted(sysctls.overrides(root, sysctls.wanted(cfg)).items()):
        print(f"note: {path} sets {key} = {value} after our drop-in, so at boot it wins; "
              "change it there")
    _nvme_note(root)
    with _writing():
        _netconsole(cfg, root, args.dry_run, live=args.root is None)
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    """Restore the recorded values and remove our own files."""
    root = _root(args)
    with _writing():
        changes = sysctls.uninstall(root, _proc(args), dry_run=args.dry_run)
    _print_changes(changes, args.dry_run)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Print running and persisted values beside the config; 0 all match, 1 drift."""
    cfg = load_config(args.config)
    root = _root(args)
    rows = sysctls.compare(cfg, root, _proc(args, "checking"))
    print(sysctls.format_table(rows))
    _nvme_note(root)
    drift = [r for r in rows if not r.ok]
    if drift:
        print(f"drift in {len(drift)} of {len(rows)} settings")
        for line in sysctls.advice(rows, root):
            print(line)
        return 1
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Run the watcher until stopped."""
    cfg = load_config(args.config)
    # A watcher probing nothing (no mounts, a mistyped path) would run for good and never
    # see a hang: refuse it before anything starts.
    if not cfg.mounts:
        raise UsageError("hostguard.mounts: empty; name at least one mount point to watch")
    # A mounted file system is never stat()ed here: if it hangs now, so would we.
    try:
        mounted = watcher.mount_points(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))
    except OSError:
        mounted = set()
    for mount in cfg.mounts:
        if mount not in mounted and not Path(mount).is_dir():
            raise UsageError(f"hostguard.mounts: {mount} is not a directory")
    return watcher.main(cfg, dry_run=args.dry_run)
