"""Path probes for one uplink (what a target, a result and a prober are), and the hysteresis
that turns probe rounds into a verdict; the socket prober is in `failberry.net.prober`.

Every probe is bound to the uplink twice over: to its source address (so the policy rule for
that address picks the uplink's own routing table) and with SO_BINDTODEVICE (so a probe can
never leak out of another uplink when that table is missing). Carrier tells us about the first
hop only; probes tell us whether the path to the internet works.

A round sends one probe to every target at once and waits at most `timeout` (the smaller of
the latency threshold, the interval, and a few times the round-trip time seen lately): rounds
never overlap, and a dead path is noticed in about `down` intervals.
"""

from __future__ import annotations

import collections
import logging
import statistics
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

LOG = logging.getLogger(__name__)

MIN_TIMEOUT = 0.2  # seconds; below this, scheduling jitter on a Pi would look like loss
RTT_FACTOR = 4.0
LOSS_WINDOW = 10  # rounds over which loss is measured
LOSS_MIN_SAMPLES = 10


@dataclass(frozen=True)
class Target:
    """One probe target: `icmp`, `tcp`, `dns` or `http`/`https`."""

    kind: str
    host: str
    port: int = 0
    url: str = ""

    @property
    def label(self) -> str:
        """How config spells it."""
        if self.kind in ("http", "https"):
            return self.url
        if self.kind == "tcp":
            return f"tcp:{self.host}:{self.port}"
        return f"{self.kind}:{self.host}"


def parse_target(text: str) -> Target:
    """A config probe target (already validated by config) as a Target."""
    if text.startswith(("http://", "https://")):
        u = urllib.parse.urlsplit(text)
        kind = u.scheme
        return Target(kind, u.hostname or "", u.port or (443 if kind == "https" else 80), text)
    kind, _, rest = text.partition(":")
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        return Target("tcp", host.strip("[]"), int(port))
    if kind == "dns":
        return Target("dns", rest, 53)
    return Target("icmp", rest)


@dataclass(frozen=True)
class Binding:
    """Where probes leave from: the uplink's interface and its current address."""

    interface: str
    address: str


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome: latency in seconds when it succeeded, the error when not."""

    target: str
    ok: bool
    latency: float | None = None
    error: str = ""


class Prober(Protocol):
    """Runs one probe round; the real one sends packets, tests may script one."""

    async def round(self, binding: Binding, targets: Sequence[Target],
                    timeout: float) -> list[ProbeResult]:
        """Probe every target at once; one result each."""


# ---------------------------------------------------------------------------------------------
# The verdict (pure)


@dataclass(frozen=True)
class Thresholds:
    """When a round fails and how many rounds flip the verdict."""

    down: int
    up: int
    quorum: int  # failed targets that fail a round; 0: a majority
    latency: float  # seconds
    loss_pct: float


@dataclass(frozen=True)
class Verdict:
    """The uplink's state after a round; `changed` when it flipped this round."""

    up: bool | None
    changed: bool
    reason: str
    latency_ms: float | None
    loss_pct: float | None
    round_ok: bool


class HealthTracker:
    """Consecutive-round hysteresis over probe rounds: down after `down` failed rounds, up
    after `up` good ones. The first good round gives the first verdict (start fast)."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.t = thresholds
        self.up: bool | None = None
        self.bad_rounds = 0
        self.good_rounds = 0
        self._window: collections.deque[list[bool]] = collections.deque(maxlen=LOSS_WINDOW)
        self._rtts: collections.deque[float] = collections.deque(maxlen=LOSS_WINDOW * 3)

    def timeout(self, interval: float) -> float:
        """How long a round may wait for answers."""
        cap = min(self.t.latency, interval)
        if not self._rtts:
            return cap
        return min(cap, max(MIN_TIMEOUT, RTT_FACTOR * max(self._rtts)))

    def loss_pct(self) -> float | None:
        """Loss over the window, once the window holds enough probes."""
        samples = [ok for rnd in self._window for ok in rnd]
        if len(samples) < LOSS_MIN_SAMPLES:
            return None
        return 100.0 * samples.count(False) / len(samples)

    def reset(self, why: str) -> Verdict:
        """Forget history (the link went away); the uplink is down until probes say up."""
        self._window.clear()
        self._rtts.clear()
        self.bad_rounds = self.good_rounds = 0
        changed = self.up is not False
        self.up = False
        return Verdict(False, changed, why, None, None, False)

    def feed(self, results: Sequence[ProbeResult]) -> Verdict:
        """Take one round's results; the verdict after it."""
        n = len(results)
        failed = [r for r in results if not r.ok]
        lat = [r.latency for r in results if r.ok and r.latency is not None]
        self._window.append([r.ok for r in results])
        self._rtts.extend(lat)
        quorum = self.t.quorum or (n // 2 + 1)
        latency_ms = statistics.median(lat) * 1000 if lat else None
        loss = self.loss_pct()
        why = ""
        if n and len(failed) >= quorum:
            errs = ", ".join(f"{r.target}: {r.error}" for r in failed[:3])
            why = f"{len(failed)} of {n} targets failed ({errs})"
        elif loss is not None and loss > self.t.loss_pct:
            why = f"loss {loss:.0f}% over the last {len(self._window)} rounds " \
                  f"> {self.t.loss_pct:g}%"
        elif latency_ms is not None and latency_ms > self.t.latency * 1000:
            why = f"latency {latency_ms:.0f}ms > {self.t.latency * 1000:.0f}ms"
        ok = not why
        if ok:
            self.good_rounds += 1
            self.bad_rounds = 0
        else:
            self.bad_rounds += 1
            self.good_rounds = 0
        before = self.up
        if ok and (self.up is None or (not self.up and self.good_rounds >= self.t.up)):
            self.up = True
            reason = (f"{self.good_rounds} good rounds" if before is False
                      else "first round good")
        elif not ok and self.up is not False and self.bad_rounds >= self.t.down:
            self.up = False
            reason = f"{self.bad_rounds} failed rounds: {why}"
        else:
            reason = why or "round good"
        return Verdict(self.up, self.up != before, reason, latency_ms, loss, ok)
