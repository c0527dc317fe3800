"""`failberry build`, `flash`, `boot-test` (the image builder issue fills these in)."""

from __future__ import annotations

import argparse

from failberry.errors import NotBuiltYet


def cmd_build(args: argparse.Namespace) -> int:
    """Build an image."""
    raise NotBuiltYet("`failberry build` is not built yet (image builder issue)")


def cmd_flash(args: argparse.Namespace) -> int:
    """Flash an image: checked, confirmed, written (bmap-aware) and verified."""
    from failberry.image.flash import flash

    flash(args.image, args.device, yes=args.yes, allow_large=args.allow_large)
    return 0


def cmd_boot_test(args: argparse.Namespace) -> int:
    """Boot-test an image."""
    raise NotBuiltYet("`failberry boot-test` is not built yet (image builder issue)")
