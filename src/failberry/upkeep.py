"""Security updates on the Pi, bounded by the uplink: `python3 -m failberry.upkeep may-fetch`
(an ExecCondition= of apt-daily*.service: no package lists or upgrades while the metered mobile
link carries the Pi's traffic) and `reboot-if-due --window HH:MM-HH:MM` (a timer: reboot when
an upgrade asked for one, inside the reboot window, and only while the mobile link is not the
active uplink; in sidecar mode, where the mobile link is the Pi's only uplink, the window
alone). unattended-upgrades cannot know which link is up; the supervisor's /status says.
Pure decisions first; the shell around them reads the config, /status, the clock and
/run/reboot-required."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)

REBOOT_REQUIRED = Path("/run/reboot-required")
MOBILE = "mobile"
# ExecCondition=: 0 runs the unit, 1-254 skips it (not a failure), 255 fails it.
RUN, SKIP = 0, 1


def parse_window(text: str) -> str:
    """Check a "HH:MM-HH:MM" window (local time, may wrap past midnight); returns it."""
    try:
        start, end = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ValueError(f'must be "HH:MM-HH:MM" (e.g. "03:00-05:00"), not {text!r}') from None
    if start == end:
        raise ValueError(f"{text!r}: start and end are the same time")
    return text


def in_window(window: str, now: dt.time) -> bool:
    """Whether `now` is inside the window (end excluded; "23:00-01:00" wraps midnight)."""
    start, end = (dt.time.fromisoformat(part.strip()) for part in window.split("-"))
    if start < end:
        return start <= now < end
    return now >= start or now < end


SIDECAR_WHY = ("sidecar mode: the mobile link is the Pi's only uplink and carries the LAN "
               "only while the main router has failed over to it")


def may_fetch(active_uplink: str | None, *, over_mobile: bool,
              sidecar: bool = False) -> tuple[bool, str]:
    """Whether apt may download now, and why (unknown counts as metered: better a day late
    than a month's data cap spent on packages). In sidecar mode the Pi's own traffic always
    goes out over the mobile link: holding updates for a wired uplink would hold them for
    ever, so they go ahead (a few megabytes a month, counted with the rest)."""
    if over_mobile:
        return True, "updates over the mobile link are allowed ([image] updates_over_mobile)"
    if sidecar:
        return True, SIDECAR_WHY
    if active_uplink is None:
        return False, "the supervisor does not say which uplink is active"
    if active_uplink == MOBILE:
        return False, "the mobile (metered) link is the active uplink"
    return True, f"the active uplink is {active_uplink}"


def reboot_due(*, required: bool, window: str, now: dt.time,
               active_uplink: str | None, sidecar: bool = False) -> tuple[bool, str]:
    """Whether to reboot now for an upgrade, and why (or why not). In sidecar mode the mobile
    link is always the Pi's active uplink, so the window alone decides (else never)."""
    if not required:
        return False, "no upgrade asked for a reboot"
    if not window:
        return False, "no reboot window configured"
    if not in_window(window, now):
        return False, f"outside the reboot window {window}"
    if sidecar:
        return True, f"an upgrade asked for a reboot; inside {window} ({SIDECAR_WHY})"
    if active_uplink is None:
        return False, "the supervisor does not say which uplink is active"
    if active_uplink == MOBILE:
        return False, "the mobile link is the active uplink: a reboot would cut the backup"
    return True, f"an upgrade asked for a reboot; inside {window}, active uplink {active_uplink}"


def is_sidecar(config: Path) -> bool:
    """Whether the Pi runs in sidecar mode (False when the config cannot be read: then the
    gateway rules, which hold updates while the mobile link is active, apply)."""
    from failberry import config as config_mod
    from failberry.config import FailoverMode
    from failberry.errors import FailberryError

    try:
        return config_mod.load(config).failover.mode is FailoverMode.SIDECAR
    except FailberryError as e:
        LOG.warning("%s", e)
        return False


def active_uplink(config: Path) -> str | None:
    """The uplink the running supervisor routes through, or None when it cannot be asked."""
    from failberry import statuscmd
    from failberry.errors import FailberryError

    try:
        doc = statuscmd.fetch(statuscmd.status_url(config))
    except FailberryError as e:
        LOG.warning("%s", e)
        return None
    active = doc.get("active_uplink")
    return str(active) if active else None


def main(argv: Sequence[str] | None = None) -> int:
    """The on-Pi entry point of the apt drop-ins and the reboot timer."""
    p = argparse.ArgumentParser(prog="python3 -m failberry.upkeep")
    p.add_argument("-c", "--config", type=Path, default=Path("/etc/failberry/failberry.toml"))
    sub = p.add_subparsers(dest="verb", required=True)
    fetch = sub.add_parser("may-fetch", help="exit 0 if apt may download now, else 1")
    fetch.add_argument("--over-mobile", action="store_true")
    reboot = sub.add_parser("reboot-if-due", help="reboot if an upgrade asked, in the window")
    reboot.add_argument("--window", type=parse_window, required=True)
    reboot.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.verb == "may-fetch":
        sidecar = not args.over_mobile and is_sidecar(args.config)
        ok, why = may_fetch(None if args.over_mobile or sidecar else active_uplink(args.config),
                            over_mobile=args.over_mobile, sidecar=sidecar)
        LOG.info("apt %s: %s", "may fetch" if ok else "skipped", why)
        return RUN if ok else SKIP
    required = REBOOT_REQUIRED.exists()
    sidecar = required and is_sidecar(args.config)
    due, why = reboot_due(required=required, window=args.window,
                          now=dt.datetime.now().time(), sidecar=sidecar,
                          active_uplink=active_uplink(args.config)
                          if required and not sidecar else None)
    LOG.info("%s: %s", "rebooting" if due else "no reboot", why)
    if due and not args.dry_run:
        return subprocess.run(["systemctl", "reboot"], check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
