"""`failberry net clean`, and `python -m failberry.net` (one apply or a clean, for tests,
benchmarks and debugging on a Pi: `apply ACTIVE`, `clean`). Running the part alone, polled
into a file, is the tests' harness (tests/net/netrun.py)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from failberry.net.part import STATE_DIR

LOG = logging.getLogger(__name__)


def clean(state_dir: Path) -> list[str]:
    """Remove every route, rule and chain (IPv4 and IPv6) failberry owns; restore saved
    sysctls."""
    from failberry.net.apply_routes import RouteApplier
    from failberry.net.firewall import IptcFirewall
    from failberry.net.firewall6 import DualStackFirewall, Ip6tcFirewall
    from failberry.net.rtnl import IPRoute
    from failberry.net.sysctl import ProcSysctl, SysctlManager

    with IPRoute() as nl:
        changes = RouteApplier(nl).clean()
    changes += DualStackFirewall(IptcFirewall(), Ip6tcFirewall(), ()).clean()
    changes += SysctlManager(ProcSysctl(), state_dir).restore()
    return changes


def cmd_net_clean(args: argparse.Namespace) -> int:
    """Remove failberry's routes, rules and chains."""
    changes = clean(Path(getattr(args, "state_dir", None) or STATE_DIR))
    for change in changes:
        print(change)
    print(f"failberry net clean: {len(changes)} change(s)")
    return 0


def apply_once(cfg_path: Path, active: str | None, state_dir: Path) -> list[str]:
    """Observe the links and apply the plan for this active uplink once."""
    from failberry import config
    from failberry.net import plan
    from failberry.net.apply_routes import RouteApplier
    from failberry.net.firewall6 import dual_stack
    from failberry.net.rtnl import IPRoute
    from failberry.net.sysctl import ProcSysctl, SysctlManager

    cfg = config.load(cfg_path)
    with IPRoute() as nl:
        routes = RouteApplier(nl)
        links = routes.observe(u.interface for u in plan.uplinks(cfg))
        want = plan.plan(cfg, links, active)
        # The network part's order: NAT and the filter before anything routes LAN traffic out.
        changes = dual_stack(cfg).sync(want.chains)
        changes += SysctlManager(ProcSysctl(), state_dir).apply(want.sysctls)
        changes += routes.apply(want.routes, want.rules)
    return changes


def main(argv: list[str] | None = None) -> int:
    """`python -m failberry.net apply|clean`."""
    p = argparse.ArgumentParser(prog="python -m failberry.net")
    p.add_argument("action", choices=["apply", "clean"])
    p.add_argument("active", nargs="?", help="apply: the active uplink")
    p.add_argument("-c", "--config", type=Path, default=Path("/etc/failberry/failberry.toml"))
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.action == "clean":
        for change in clean(args.state_dir):
            print(change)
    else:
        for change in apply_once(args.config, args.active, args.state_dir):
            print(change)
    return 0
