"""The clock seam: parts read time through a `Clock`, so tests can drive it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for timeouts and ages; wall time for what outlives a reboot."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (CLOCK_MONOTONIC: the printk clock's base)."""

    def time(self) -> float:
        """Seconds since the epoch."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def time(self) -> float:
        """`time.time()`."""
        return time.time()
