"""Mobile data used per LAN device this billing period, from iptables rule counters.

Rule counters start at zero whenever a rule is written (a restart, a cap change), so the total
is a persisted base plus the live counter, and a counter that went backwards is folded into the
base. The file is written atomically, at most once a minute and only when its content changed,
and on exit. It also holds the live
counters it was written with: the chains survive a restart of the part (they are not removed
on a crash), so a restarted part counts on from them instead of counting them twice.

Besides the devices, the same file keeps `health-checks`: the bytes of the health endpoint's
traffic on the mobile link (DNS failover services polling it). Those are counted the same way
but kept out of the device totals and the cap check: no LAN device made them."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from failberry.fileio import write_atomic

LOG = logging.getLogger(__name__)

PERSIST_EVERY = 60.0
HEALTH_KEY = "health-checks"  # not a device: a MAC or IP address never looks like this
SEPARATE = frozenset({HEALTH_KEY})  # counted here, but not in the device totals


def period_start(today: dt.date, reset_day: int) -> dt.date:
    """The first day of the billing period that `today` is in."""
    if today.day >= reset_day:
        return today.replace(day=reset_day)
    first = today.replace(day=1)
    prev = first - dt.timedelta(days=1)
    return prev.replace(day=reset_day)


class Usage:
    """Bytes per device key this period; `sample()` takes live counters, `total()` gives
    what was used."""

    def __init__(self, path: Path, reset_day: int, cap: int) -> None:
        self.path = path
        self.reset_day = reset_day
        self.cap = cap
        self.period = ""
        self.base: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self._persisted_at: float | None = None
        self._written = ""
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.period = str(data["period"])
            totals = {str(k): int(v) for k, v in data["bytes"].items()}
            self.last = {str(k): int(v) for k, v in data.get("live", {}).items()}
            self.base = {k: v - self.last.get(k, 0) for k, v in totals.items()}
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            LOG.warning("ignoring unreadable usage file %s: %s", self.path, e)

    def sample(self, counters: Mapping[str, int], today: dt.date) -> None:
        """Take the live counters (bytes per device since their rules were written)."""
        period = period_start(today, self.reset_day).isoformat()
        if period != self.period:
            if self.period:
                LOG.info("data usage period %s -> %s: counters start again", self.period, period)
            self.period = period
            # Bytes counted so far belong to the old period.
            self.base = {k: -v for k, v in counters.items()}
            self.last = dict(counters)
            return
        for key, value in counters.items():
            if value < self.last.get(key, 0):  # the rule was rewritten: its counter restarted
                self.base[key] = self.base.get(key, 0) + self.last[key]
            self.last[key] = value

    def totals(self) -> dict[str, int]:
        """Bytes used per device this period (not the separate keys: `health-checks`)."""
        keys = (set(self.base) | set(self.last)) - SEPARATE
        return {k: self.total(k) for k in sorted(keys)}

    def total(self, key: str) -> int:
        """Bytes counted under one key this period (a device, or `health-checks`)."""
        return max(0, self.base.get(key, 0) + self.last.get(key, 0))

    def over_cap(self) -> bool:
        """The cap is set and reached."""
        return bool(self.cap) and sum(self.totals().values()) >= self.cap

    def maybe_persist(self, now: float, force: bool = False) -> bool:
        """Write the file if a minute has passed since the last write (or `force`)."""
        if not force and self._persisted_at is not None \
                and now - self._persisted_at < PERSIST_EVERY:
            return False
        keys = sorted(set(self.base) | set(self.last))
        text = json.dumps({"period": self.period, "bytes": {k: self.total(k) for k in keys},
                           "live": self.last}, sort_keys=True)
        # The same content again would only wear the SD card (an atomic write is a new inode,
        # a data block, the directory and a journal commit: ~28 MiB a day at one a minute).
        if text == self._written:
            return False
        write_atomic(self.path, text)
        self._written = text
        self._persisted_at = now
        return True
