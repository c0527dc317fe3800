"""Mobile data accounting: billing periods, counters that restart, persistence."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from failberry.net.usage import Usage, period_start


def test_period_start_follows_the_reset_day() -> None:
    assert period_start(dt.date(2026, 3, 15), 1) == dt.date(2026, 3, 1)
    assert period_start(dt.date(2026, 3, 15), 20) == dt.date(2026, 2, 20)
    assert period_start(dt.date(2026, 1, 5), 10) == dt.date(2025, 12, 10)
    assert period_start(dt.date(2026, 3, 20), 20) == dt.date(2026, 3, 20)


def test_totals_survive_counter_restarts_and_a_supervisor_restart(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    day = dt.date(2026, 3, 15)
    u = Usage(path, 1, cap=1000)
    u.sample({"a": 0}, day)
    u.sample({"a": 300}, day)
    u.sample({"a": 50}, day)  # the rule was rewritten: its counter started again
    assert u.totals() == {"a": 350}
    assert not u.over_cap()
    assert u.maybe_persist(now=100.0)
    assert not u.maybe_persist(now=130.0)  # at most once a minute
    assert json.loads(path.read_text()) == {"period": "2026-03-01", "bytes": {"a": 350},
                                            "live": {"a": 50}}
    u.sample({"a": 700}, day)
    assert u.maybe_persist(now=130.0, force=True)
    again = Usage(path, 1, cap=1000)  # a restart: rules (and counters) start from zero
    again.sample({"a": 0}, day)
    again.sample({"a": 300}, day)
    assert again.totals() == {"a": 1300}
    assert again.over_cap()


def test_counters_that_survive_a_restart_are_not_counted_twice(tmp_path: Path) -> None:
    # A crashed network part leaves its chains (fail closed), so the restarted part finds the
    # counters where they were, not at zero.
    path = tmp_path / "usage.json"
    day = dt.date(2026, 3, 15)
    u = Usage(path, 1, cap=0)
    u.sample({"a": 0}, day)
    u.sample({"a": 400}, day)
    assert u.maybe_persist(now=100.0)
    again = Usage(path, 1, cap=0)
    again.sample({"a": 450}, day)  # 50 more bytes since the file was written
    assert again.totals() == {"a": 450}


def test_a_new_period_starts_from_zero(tmp_path: Path) -> None:
    u = Usage(tmp_path / "usage.json", 10, cap=0)
    u.sample({"a": 500}, dt.date(2026, 3, 9))
    u.sample({"a": 800}, dt.date(2026, 3, 9))
    u.sample({"a": 900}, dt.date(2026, 3, 10))
    assert u.totals() == {"a": 0}
    u.sample({"a": 950}, dt.date(2026, 3, 11))
    assert u.totals() == {"a": 50}
    assert not u.over_cap()  # no cap set


def test_unchanged_counters_are_not_written_again(tmp_path: Path) -> None:
    # An idle Pi's counters do not move: rewriting the same file each minute only wears the
    # SD card (issue 18).
    path = tmp_path / "usage.json"
    day = dt.date(2026, 3, 15)
    u = Usage(path, 1, cap=0)
    u.sample({"a": 0}, day)
    u.sample({"a": 400}, day)
    assert u.maybe_persist(now=100.0)
    inode = path.stat().st_ino
    u.sample({"a": 400}, day)
    assert not u.maybe_persist(now=200.0)
    assert not u.maybe_persist(now=300.0, force=True)
    assert path.stat().st_ino == inode
    u.sample({"a": 401}, day)
    assert u.maybe_persist(now=400.0)
    assert path.stat().st_ino != inode
