"""`failberry status` (the health/status issue fills this in)."""

from __future__ import annotations

import argparse

from failberry.errors import NotBuiltYet


def cmd_status(args: argparse.Namespace) -> int:
    """Show the supervisor's status."""
    raise NotBuiltYet("`failberry status` is not built yet (health/status issue)")
