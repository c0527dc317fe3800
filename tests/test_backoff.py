"""The one retry delay formula."""

from __future__ import annotations

import random

from failberry.backoff import exponential, jittered, scattered


def test_exponential_doubles_from_initial_and_stops_at_the_cap() -> None:
    assert [exponential(n, 2.0, 20.0) for n in range(0, 6)] == [2.0, 2.0, 4.0, 8.0, 16.0, 20.0]


def test_a_very_long_outage_does_not_overflow() -> None:
    assert exponential(5000, 10.0, 600.0) == 600.0  # 2.0 ** 4999 raised OverflowError


def test_jitter_stays_within_the_upper_half() -> None:
    rng = random.Random(1)
    got = [jittered(4, 1.0, 100.0, rng) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in got) and len(set(got)) > 100


def test_scattered_spreads_by_a_quarter_and_stays_under_the_cap() -> None:
    assert scattered(1, 5.0, 300.0, 0.0) == 3.75 and scattered(1, 5.0, 300.0, 1.0) == 6.25
    assert scattered(4, 5.0, 300.0, 0.5) == 40.0
    assert scattered(21, 5.0, 300.0, 1.0) == 300.0 and scattered(21, 5.0, 300.0, 0.0) == 225.0
