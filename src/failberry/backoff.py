"""The one retry delay formula: exponential, capped, with "equal jitter" where many boxes
may retry the same service at once."""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 60  # 2.0 ** 1100 overflows; any cap is reached long before this


def exponential(attempt: int, initial: float, maximum: float) -> float:
    """`initial` after the first failure, doubling with each further one, never above
    `maximum`."""
    return min(maximum, initial * 2.0 ** min(max(0, attempt - 1), _MAX_DOUBLINGS))


def jittered(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """`exponential`, half fixed and half random, so many boxes that lost the same provider
    at once do not come back in step."""
    delay = exponential(attempt, initial, maximum)
    return delay / 2 + rng.uniform(0, delay / 2)


def scattered(attempt: int, initial: float, maximum: float, u: float,
              spread: float = 0.25) -> float:
    """`exponential` scattered by ±`spread` and still never above `maximum`; `u` is a draw
    uniform in [0, 1) (the modem machine is pure: its randomness comes from a seam)."""
    delay = exponential(attempt, initial, maximum)
    return min(maximum, delay * (1 - spread + 2 * spread * u))
