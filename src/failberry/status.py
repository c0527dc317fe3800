"""The shared status snapshot: every part of the supervisor writes its piece, every reader
(HTTP, `failberry status`, metrics, systemd STATUS=) reads the same object."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from failberry import __version__


@dataclass
class PartReport:
    """A part's last word: when it reported (monotonic), how long it may stay silent, state."""

    deadline: float
    last: float = 0.0
    state: str = "starting"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Status:
    """What the supervisor knows right now."""

    state: str = "starting"  # starting | running | stopping
    started_wall: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    parts: dict[str, PartReport] = field(default_factory=dict)

    def register(self, name: str, deadline: float) -> None:
        """Declare a part that must report at least every `deadline` seconds."""
        self.parts[name] = PartReport(deadline=deadline, last=time.monotonic())

    def report(self, name: str, state: str, **detail: Any) -> None:
        """A part says it is alive, with its current state and facts."""
        part = self.parts.get(name)
        if part is None:
            part = self.parts[name] = PartReport(deadline=float("inf"))
        part.last = time.monotonic()
        part.state = state
        part.detail = dict(detail)

    def stale_parts(self, now: float | None = None) -> list[str]:
        """Parts that have not reported within their deadline."""
        now = time.monotonic() if now is None else now
        return sorted(n for n, p in self.parts.items() if now - p.last > p.deadline)

    def healthy(self) -> bool:
        """The minimal health rule: running, and every part reporting on time."""
        return self.state == "running" and not self.stale_parts()

    def snapshot(self) -> dict[str, Any]:
        """The JSON-ready view."""
        now = time.monotonic()
        return {
            "status": "ok" if self.healthy() else "fail",
            "state": self.state,
            "version": __version__,
            "uptime_s": round(now - self.started_mono, 3),
            "started_at": self.started_wall,
            "parts": {
                name: {"state": p.state, "age_s": round(now - p.last, 3), **p.detail}
                for name, p in sorted(self.parts.items())
            },
        }
