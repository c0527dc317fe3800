"""`failberry hostguard ...` (the host guard issue fills these in). Stdlib only."""

from __future__ import annotations

import argparse

from failberry.errors import NotBuiltYet


def _todo(name: str) -> int:
    raise NotBuiltYet(f"`failberry hostguard {name}` is not built yet (host guard issue)")


def cmd_install(args: argparse.Namespace) -> int:
    """Install the kernel settings."""
    return _todo("install")


def cmd_uninstall(args: argparse.Namespace) -> int:
    """Remove them."""
    return _todo("uninstall")


def cmd_check(args: argparse.Namespace) -> int:
    """Compare them."""
    return _todo("check")


def cmd_watch(args: argparse.Namespace) -> int:
    """Watch for hung storage."""
    return _todo("watch")
