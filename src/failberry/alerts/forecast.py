"""The data cap: warnings when use crosses fractions of the cap, and a forecast that the cap
will be reached before the reset day at the current rate.

The health checks of a DNS failover service (many checkers polling /health on the mobile
address every 10-30 s) count against the cap too, but no LAN device makes them, so they are
a separate counter (`health_bytes`) with a rate of its own: steady, unlike the LAN's bursts.
`forecast` is a pure function over samples and a time, so a test can play a month."""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from failberry.alerts.model import Alert, Event, Severity
from failberry.units import human_size

DAY = 86400.0
WINDOW = DAY  # the rate is measured over the last day of samples
MIN_SPAN = 3600.0  # and not before an hour of them
SAMPLE_EVERY = 300.0


@dataclass(frozen=True)
class Sample:
    """Counters at one moment: LAN bytes this period, health-check bytes this period."""

    at: float  # wall clock
    used: int
    health: int = 0


@dataclass(frozen=True)
class Forecast:
    """Where this period is heading."""

    total: int  # bytes counted against the cap so far (LAN + health checks)
    health: int
    rate: float  # LAN bytes per second over the window
    health_rate: float
    period_end: float  # wall clock of the reset
    projected: int  # bytes at the reset, at these rates
    reach_at: float | None  # when the cap is reached, if before the reset


def period_bounds(now: float, reset_day: int) -> tuple[dt.date, float]:
    """The local date the period began and the wall time it ends (the next reset day)."""
    today = dt.date.fromtimestamp(now)
    if today.day >= reset_day:
        start = today.replace(day=reset_day)
    else:
        prev = today.replace(day=1) - dt.timedelta(days=1)
        start = prev.replace(day=reset_day)
    nxt = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=reset_day)
    return start, dt.datetime.combine(nxt, dt.time()).timestamp()


def _rate(samples: Sequence[Sample], attr: str) -> float:
    def value(s: Sample) -> int:
        return s.used if attr == "used" else s.health

    """Bytes per second from the first to the last sample, restarting after a counter reset."""
    run = [samples[0]]
    for s in samples[1:]:
        if value(s) < value(run[-1]):
            run = [s]  # the period turned over (or the counter restarted): measure from here
        else:
            run.append(s)
    span = run[-1].at - run[0].at
    if span <= 0:
        return 0.0
    return max(0.0, (value(run[-1]) - value(run[0])) / span)


def forecast(samples: Sequence[Sample], now: float, cap: int, reset_day: int, *,
             window: float = WINDOW, min_span: float = MIN_SPAN) -> Forecast | None:
    """The forecast from the samples of the last `window`; None without a cap or with less
    than `min_span` of samples."""
    recent = [s for s in samples if now - window <= s.at <= now]
    if not cap or len(recent) < 2 or recent[-1].at - recent[0].at < min_span:
        return None
    last = recent[-1]
    rate, health_rate = _rate(recent, "used"), _rate(recent, "health")
    _, end = period_bounds(now, reset_day)
    total = last.used + last.health
    remaining = max(0.0, end - now)
    projected = int(total + (rate + health_rate) * remaining)
    reach_at = None
    if total < cap and rate + health_rate > 0:
        t = now + (cap - total) / (rate + health_rate)
        reach_at = t if t < end else None
    elif total >= cap:
        reach_at = now
    return Forecast(total, last.health, rate, health_rate, end, projected, reach_at)


@dataclass
class DataWatch:
    """Turns the network part's counters into data-cap alerts, each once a period."""

    fractions: tuple[float, ...]  # percent of the cap
    reset_day: int
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=400))
    told: set[str] = field(default_factory=set)  # "<period>:<percent>" and "<period>:forecast"
    last: Forecast | None = None

    def observe(self, used: int, health: int, cap: int, now: float) -> list[Alert]:
        """New counters; the alerts they call for."""
        if not self.samples or now - self.samples[-1].at >= SAMPLE_EVERY \
                or used < self.samples[-1].used:
            self.samples.append(Sample(now, used, health))
        if not cap:
            return []
        start, _ = period_bounds(now, self.reset_day)
        period = start.isoformat()
        self.told = {t for t in self.told if t.startswith(period)}
        total = used + health
        out: list[Alert] = []
        crossed = [p for p in self.fractions if total >= cap * p / 100.0
                   and f"{period}:{p:g}" not in self.told]
        if crossed:
            top = max(crossed)
            self.told |= {f"{period}:{p:g}" for p in crossed}
            severity = Severity.CRITICAL if top >= 100 else Severity.WARNING
            out.append(Alert(Event.DATA_CAP, severity,
                             f"mobile data {human_size(total)} of {human_size(cap)} "
                             f"({100.0 * total / cap:.0f}%, cap warning at {top:g}%)"
                             + (f"; health checks {human_size(health)}" if health else ""),
                             now, uplink="mobile", key=f"data_cap:{top:g}",
                             fields={"used_bytes": str(used), "health_bytes": str(health),
                                     "cap_bytes": str(cap), "percent": f"{top:g}"}))
        fc = forecast(list(self.samples), now, cap, self.reset_day)
        self.last = fc
        if (fc is not None and fc.reach_at is not None and total < cap
                and f"{period}:forecast" not in self.told):
            self.told.add(f"{period}:forecast")
            when = dt.datetime.fromtimestamp(fc.reach_at).strftime("%Y-%m-%d %H:%M")
            reset = dt.date.fromtimestamp(fc.period_end).isoformat()
            out.append(Alert(Event.DATA_FORECAST, Severity.WARNING,
                             f"mobile data cap {human_size(cap)} will be reached about {when},"
                             f" before the reset on {reset}, at the current rate "
                             f"({human_size(int((fc.rate + fc.health_rate) * DAY))}/day, "
                             f"health checks {human_size(int(fc.health_rate * DAY))}/day)",
                             now, uplink="mobile",
                             fields={"reach_at": f"{fc.reach_at:.0f}",
                                     "projected_bytes": str(fc.projected)}))
        return out
