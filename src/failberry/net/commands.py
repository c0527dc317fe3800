"""`failberry net clean` (the routing/failover issue fills this in)."""

from __future__ import annotations

import argparse

from failberry.errors import NotBuiltYet


def cmd_net_clean(args: argparse.Namespace) -> int:
    """Remove failberry's routes, rules and chains."""
    raise NotBuiltYet("`failberry net clean` is not built yet (routing issue)")
