"""Forced failover/failback (an admin's SMS `failover`/`failback`): the pure policy with a
fake clock (plain numbers for `now`)."""

from __future__ import annotations

import logging

import pytest

from failberry.net.failover import Failover, UplinkView


def views(wired: tuple[bool, bool | None] = (True, True),
          mobile: tuple[bool, bool | None] = (True, True)) -> dict[str, UplinkView]:
    return {"wired": UplinkView(10, *wired), "mobile": UplinkView(20, *mobile)}


class Clock:
    """A fake monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_forced_failover_holds_until_its_time_is_up_then_the_policy_fails_back() -> None:
    clock = Clock()
    f = Failover(hold_down=30)
    assert f.decide(views(), clock()).active == "wired"
    clock.now += 100
    f.force("mobile", 600, "SMS failover from +491701234567", clock())
    d = f.decide(views(), clock())
    assert (d.active, d.previous, d.changed) == ("mobile", "wired", True)
    assert d.reason == "mobile forced for 600s: SMS failover from +491701234567"
    assert d.recheck_in == pytest.approx(600)
    assert f.events[-1].reason == d.reason
    clock.now += 599
    d = f.decide(views(), clock())
    assert d.active == "mobile" and not d.changed  # wired is healthy and preferred: no matter
    assert d.recheck_in == pytest.approx(1)
    clock.now += 1
    d = f.decide(views(), clock())
    # wired has been healthy all along (longer than the hold-down): back at once.
    assert (d.active, d.previous) == ("wired", "mobile")
    assert d.reason.startswith("force of mobile over; wired has been healthy")
    assert f.forced is None


def test_a_forced_failback_overrides_failing_probes() -> None:
    clock = Clock()
    f = Failover(hold_down=30)
    f.decide(views(), clock())
    assert f.decide(views(wired=(True, False)), clock()).active == "mobile"
    f.force("wired", 60, "SMS failback", clock())
    d = f.decide(views(wired=(True, False)), clock())
    assert (d.active, d.previous) == ("wired", "mobile")
    clock.now += 60
    d = f.decide(views(wired=(True, False)), clock())
    assert (d.active, d.previous) == ("mobile", "wired")
    assert "force of wired over; wired fails its probes" in d.reason


def test_a_force_of_an_uplink_without_a_link_is_ignored(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    clock = Clock()
    f = Failover(hold_down=30)
    f.decide(views(mobile=(False, None)), clock())
    f.force("mobile", 600, "SMS failover", clock())
    with caplog.at_level(logging.WARNING, "failberry.net.failover"):
        d = f.decide(views(mobile=(False, None)), clock())
    assert d.active == "wired" and not d.changed
    assert f.forced is None
    assert "ignoring the force of mobile (SMS failover): its link is not usable" in caplog.text
    # The mobile link coming up later does not revive the ignored force.
    clock.now += 5
    assert f.decide(views(), clock()).active == "wired"


def test_a_force_whose_link_goes_ends_and_the_policy_takes_over() -> None:
    clock = Clock()
    f = Failover(hold_down=30)
    f.decide(views(), clock())
    f.force("mobile", 600, "SMS failover", clock())
    assert f.decide(views(), clock()).active == "mobile"
    clock.now += 10
    d = f.decide(views(mobile=(False, True)), clock())
    assert (d.active, d.previous) == ("wired", "mobile")
    assert d.reason.startswith("ending the force of mobile: it has no usable link; ")
    clock.now += 5
    assert f.decide(views(), clock()).active == "wired"  # the force does not come back


def test_cancel_ends_a_force_at_once() -> None:
    clock = Clock()
    f = Failover(hold_down=30)
    f.decide(views(), clock())
    clock.now += 30  # wired has been healthy for the hold-down
    f.force("mobile", 600, "SMS failover", clock())
    assert f.decide(views(), clock()).active == "mobile"
    clock.now += 1
    f.force(None, 0, "cancelled", clock())
    assert f.forced is None
    assert f.decide(views(), clock()).active == "wired"


def test_a_force_of_an_unknown_uplink_is_ignored() -> None:
    f = Failover(hold_down=30)
    only_mobile = {"mobile": UplinkView(20, True, True)}
    f.decide(only_mobile, 0)
    f.force("wired", 60, "SMS failback", 0)  # sidecar mode has no wired uplink
    d = f.decide(only_mobile, 1)
    assert d.active == "mobile" and f.forced is None


def test_a_newer_force_replaces_the_older_one() -> None:
    clock = Clock()
    f = Failover(hold_down=0)
    f.decide(views(), clock())
    f.force("mobile", 600, "first", clock())
    f.decide(views(), clock())
    clock.now += 10
    f.force("mobile", 20, "second", clock())
    d = f.decide(views(), clock())
    assert d.recheck_in == pytest.approx(20)
    clock.now += 20
    assert f.decide(views(), clock()).active == "wired"
    assert f.forced is None


def test_status_form_counts_down() -> None:
    clock = Clock()
    f = Failover(hold_down=30)
    f.force("mobile", 90, "SMS failover", clock())
    assert f.forced is not None
    clock.now += 30.04
    assert f.forced.as_dict(clock()) == {"uplink": "mobile", "remaining_s": 60.0,
                                         "reason": "SMS failover"}
