"""One channel's outbox: de-duplication by hold-down, the per-hour rate limit, quiet hours,
retries with backoff. Pure: every method takes the wall-clock time, so a test can feed a
flapping link's month in microseconds; `to_json`/`from_json` let it survive a restart.

The hold-down works per key: the first alert of a key goes out at once; alerts of the same
key within `hold_down` after it are folded into one held message, sent when the hold-down
ends with the latest text and how many it stands for. A flapping link (ten switches in a
minute) so sends one message, then one summary per hold-down while it keeps flapping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from failberry.alerts.model import Alert, Severity
from failberry.backoff import exponential

LOG = logging.getLogger(__name__)

HOUR = 3600.0
MAX_ENTRIES = 200  # a channel dead for days keeps at most this many (oldest dropped)


@dataclass(frozen=True)
class Policy:
    """How a channel spaces and retries its messages."""

    hold_down: float = 300.0
    max_per_hour: int = 20
    quiet: tuple[int, int] | None = None  # minutes after local midnight (start, end)
    retry_initial: float = 10.0
    retry_max: float = 600.0
    retry_for: float = 86400.0
    retries: bool = True  # hook scripts run once: they may have side effects


@dataclass
class Entry:
    """A message waiting: the latest alert of its key and how many alerts it stands for."""

    id: int
    alert: Alert
    created: float
    count: int = 1
    first: float = 0.0  # wall time of the first alert folded in
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""
    in_flight: bool = False

    def fold(self, alert: Alert) -> None:
        """Another alert of the same key: keep the newest text and the highest urgency."""
        severity = max(self.alert.severity, alert.severity)
        self.alert = alert if alert.severity == severity else _with_severity(alert, severity)
        self.count += 1

    def text(self) -> str:
        """The message, with how many alerts it stands for."""
        if self.count <= 1:
            return self.alert.message
        since = time.strftime("%H:%M", time.localtime(self.first))
        return f"{self.alert.message} ({self.count - 1} more since {since})"

    def to_json(self) -> dict[str, Any]:
        """For the queue file."""
        return {"id": self.id, "alert": self.alert.to_json(), "created": self.created,
                "count": self.count, "first": self.first, "attempts": self.attempts,
                "next_try": self.next_try, "last_error": self.last_error}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Entry:
        """Back from the queue file."""
        return cls(int(raw["id"]), Alert.from_json(raw["alert"]), float(raw["created"]),
                   int(raw["count"]), float(raw["first"]), int(raw["attempts"]),
                   float(raw["next_try"]), str(raw.get("last_error", "")))


def _with_severity(alert: Alert, severity: Severity) -> Alert:
    from dataclasses import replace

    return replace(alert, severity=severity)


def local_minutes(now: float) -> int:
    """Minutes after local midnight."""
    lt = time.localtime(now)
    return lt.tm_hour * 60 + lt.tm_min


def in_quiet(quiet: tuple[int, int] | None, minutes: int) -> bool:
    """Whether `minutes` after midnight falls in the quiet range (which may wrap midnight)."""
    if quiet is None:
        return False
    start, end = quiet
    return start <= minutes < end if start < end else minutes >= start or minutes < end


@dataclass
class Counts:
    """What the channel did (for /metrics)."""

    sent: int = 0
    failed: int = 0  # attempts that failed
    dropped: int = 0  # messages given up on (retried past retry_for, or overflow)


@dataclass
class Outbox:
    """The messages of one channel."""

    policy: Policy
    minutes: Callable[[float], int] = local_minutes
    ready: list[Entry] = field(default_factory=list)
    held: dict[str, Entry] = field(default_factory=dict)
    last_sent: dict[str, float] = field(default_factory=dict)
    sent_times: list[float] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    next_id: int = 1

    def _quiet_for(self, alert: Alert, now: float) -> bool:
        return alert.severity < Severity.CRITICAL and in_quiet(self.policy.quiet,
                                                               self.minutes(now))

    def _new(self, alert: Alert, now: float) -> Entry:
        e = Entry(self.next_id, alert, created=now, first=alert.at, next_try=now)
        self.next_id += 1
        return e

    def offer(self, alert: Alert, now: float) -> str:
        """Take an alert; how it was handled: `queued`, `folded` or `held`."""
        key = alert.group
        if key in self.held:
            self.held[key].fold(alert)
            return "folded"
        for e in self.ready:
            if e.alert.group == key and not e.in_flight:
                e.fold(alert)  # not sent yet (retrying, rate-limited): one message for both
                return "folded"
        last = self.last_sent.get(key)
        if self._quiet_for(alert, now) or (last is not None
                                           and now - last < self.policy.hold_down):
            self.held[key] = self._new(alert, now)
            return "held"
        self._queue(self._new(alert, now), key, now)
        return "queued"

    def _queue(self, entry: Entry, key: str, now: float) -> None:
        self.last_sent[key] = now
        self.ready.append(entry)
        if len(self.ready) > MAX_ENTRIES:
            gone = self.ready.pop(0)
            self.counts.dropped += 1
            LOG.warning("alert queue full; dropped %r", gone.alert.message)

    def release(self, now: float) -> int:
        """Move held messages whose hold-down (and quiet hours) ended to the queue."""
        moved = 0
        for key, e in list(self.held.items()):
            last = self.last_sent.get(key)
            if last is not None and now - last < self.policy.hold_down:
                continue
            if self._quiet_for(e.alert, now):
                continue
            del self.held[key]
            e.next_try = now
            self._queue(e, key, now)
            moved += 1
        return moved

    def _rate_ok(self, now: float) -> bool:
        self.sent_times = [t for t in self.sent_times if now - t < HOUR]
        return len(self.sent_times) < self.policy.max_per_hour

    def take(self, now: float) -> Entry | None:
        """The next message to send now, marked in flight; None if nothing is due."""
        self.release(now)
        if not self._rate_ok(now):
            return None
        for e in self.ready:
            if not e.in_flight and e.next_try <= now:
                e.in_flight = True
                e.attempts += 1
                return e
        return None

    def sent(self, entry: Entry, now: float) -> None:
        """The message went out."""
        self.ready.remove(entry)
        self.sent_times.append(now)
        self.counts.sent += 1

    def failed(self, entry: Entry, now: float, error: str) -> bool:
        """The attempt failed; True if it will be retried."""
        entry.in_flight = False
        entry.last_error = error
        self.counts.failed += 1
        p = self.policy
        if not p.retries or now - entry.created >= p.retry_for:
            self.ready.remove(entry)
            self.counts.dropped += 1
            return False
        entry.next_try = now + exponential(entry.attempts, p.retry_initial, p.retry_max)
        return True

    def wake_at(self, now: float) -> float | None:
        """When something may next become due (None: nothing waits)."""
        times: list[float] = []
        waiting = [e for e in self.ready if not e.in_flight]
        if waiting:
            if not self._rate_ok(now):
                times.append(min(self.sent_times) + HOUR)
            else:
                times.append(min(e.next_try for e in waiting))
        for key, e in self.held.items():
            t = self.last_sent.get(key, now) + self.policy.hold_down
            if self._quiet_for(e.alert, now):
                t = max(t, now + 60.0)  # quiet hours end on a minute boundary
            times.append(t)
        return max(now, min(times)) if times else None

    def to_json(self) -> dict[str, Any]:
        """What survives a restart (messages in flight count as not sent)."""
        return {"ready": [e.to_json() for e in self.ready],
                "held": {k: e.to_json() for k, e in self.held.items()},
                "last_sent": self.last_sent, "sent_times": self.sent_times,
                "counts": vars(self.counts), "next_id": self.next_id}

    def restore(self, raw: Mapping[str, Any]) -> None:
        """Take a saved outbox back; damaged entries are skipped."""
        for item in raw.get("ready") or []:
            try:
                self.ready.append(Entry.from_json(item))
            except (KeyError, ValueError, TypeError) as e:
                LOG.warning("skipping a damaged queued alert: %s", e)
        for key, item in (raw.get("held") or {}).items():
            try:
                self.held[str(key)] = Entry.from_json(item)
            except (KeyError, ValueError, TypeError) as e:
                LOG.warning("skipping a damaged held alert: %s", e)
        self.last_sent = {str(k): float(v) for k, v in (raw.get("last_sent") or {}).items()}
        self.sent_times = [float(t) for t in raw.get("sent_times") or []]
        counts = raw.get("counts") or {}
        self.counts = Counts(int(counts.get("sent", 0)), int(counts.get("failed", 0)),
                             int(counts.get("dropped", 0)))
        self.next_id = max([int(raw.get("next_id", 1))]
                           + [e.id + 1 for e in (*self.ready, *self.held.values())])
