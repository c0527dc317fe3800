"""The updater's pure core with a hand-held clock: what it decides, how it folds results in."""

from __future__ import annotations

import random

import pytest

from failberry.dyndns.base import DyndnsError, Record, Retry, UpdateResult, record_type
from failberry.dyndns.dyndns2 import interpret
from failberry.dyndns.http import HttpReply
from failberry.dyndns.updater import (
    FIRST_CHECK_TRIES,
    RecordState,
    Timing,
    Update,
    Verify,
    Wait,
    backoff,
    check_failed,
    decide,
    failed,
    hold,
    record_view,
    restore,
    set_desired,
    succeeded,
    verified,
)

T = Timing(check_interval=600, retry_initial=2, retry_max=300)
REC = Record("vpn.example.org", "A", 60)


def fresh(checked: bool = True) -> RecordState:
    st = RecordState(REC, next_check=600.0)
    st.checked = checked
    return st


def test_first_change_checks_the_record_before_updating() -> None:
    st = RecordState(REC)
    # Nothing to publish yet: no check either (it would have nothing to compare with).
    assert decide(st, 0.0) == Wait(None)
    set_desired(st, "198.51.100.7", "198.51.100.7")
    assert decide(st, 0.0) == Verify()
    assert verified(st, frozenset({"198.51.100.7"}), 0.1, 1000.0, T) is None
    assert st.sent == st.published == "198.51.100.7" and st.confirmed
    assert decide(st, 0.2) == Wait(600.1)


def test_change_updates_at_once_and_burst_collapses_to_latest() -> None:
    st = fresh()
    for i in range(1, 20):
        set_desired(st, f"198.51.100.{i}", f"198.51.100.{i}")
    assert decide(st, 5.0) == Update("198.51.100.19", "198.51.100.19")
    succeeded(st, "198.51.100.19", UpdateResult("198.51.100.19", True), 5.0, wall=1.0, timing=T)
    assert decide(st, 5.0) == Wait(605.0)
    assert not set_desired(st, "198.51.100.19", "198.51.100.19")  # unchanged: no update
    assert decide(st, 6.0) == Wait(605.0)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff(n, T, rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        full = min(300.0, 2.0 * 2 ** (n - 1))
        assert full / 2 <= d <= full
    assert max(delays) <= 300.0
    assert len({round(backoff(3, T, random.Random(s)), 6) for s in range(10)}) > 1


def test_transient_failure_waits_but_a_new_address_goes_at_once() -> None:
    st = fresh()
    set_desired(st, "198.51.100.1", None)
    delay = failed(st, DyndnsError("p", "r", "timeout"), 10.0, T, random.Random(1))
    assert delay is not None and 1.0 <= delay <= 2.0
    assert decide(st, 10.5) == Wait(10.0 + delay)
    assert isinstance(decide(st, 10.0 + delay), Update)
    set_desired(st, "198.51.100.2", None)
    assert decide(st, 10.5) == Update("198.51.100.2", None)


def test_provider_trouble_keeps_its_floor_even_for_a_new_address() -> None:
    st = fresh()
    set_desired(st, "198.51.100.1", None)
    err = DyndnsError("p", "r", "911", retry=Retry.LATER, retry_after=1800)
    delay = failed(st, err, 0.0, T, random.Random(1))
    assert delay is not None and delay >= 1800
    set_desired(st, "198.51.100.2", None)
    assert decide(st, 60.0) == Wait(delay)


def test_fatal_error_blocks_everything() -> None:
    st = fresh()
    set_desired(st, "198.51.100.1", None)
    assert failed(st, DyndnsError("p", "r", "badauth", retry=Retry.NEVER), 0.0, T,
                  random.Random(1)) is None
    set_desired(st, "198.51.100.2", None)
    assert decide(st, 10_000.0) == Wait(None)


def test_drift_forces_a_repair_of_the_desired_address() -> None:
    st = fresh()
    set_desired(st, "198.51.100.1", None)
    succeeded(st, "198.51.100.1", UpdateResult("198.51.100.1", True), 0.0, wall=1.0, timing=T)
    assert decide(st, 600.0) == Verify()
    why = verified(st, frozenset({"192.0.2.66"}), 600.0, 2.0, T)
    assert why and "192.0.2.66" in why
    assert decide(st, 600.0) == Update("198.51.100.1", None)


def test_provider_may_publish_another_address_without_update_loops() -> None:
    """route53-lambda behind NAT publishes the address it sees; that is not a reason to
    update again, and the check compares against what the provider published."""
    st = fresh()
    set_desired(st, "10.64.0.9", "10.64.0.9")
    succeeded(st, "10.64.0.9", UpdateResult("203.0.113.4", True), 0.0, wall=1.0, timing=T)
    assert decide(st, 1.0) == Wait(600.0)
    assert verified(st, frozenset({"203.0.113.4"}), 600.0, 2.0, T) is None and st.confirmed


@pytest.mark.parametrize(("text", "retry"), [
    ("badauth", Retry.NEVER), ("!donator", Retry.NEVER), ("notfqdn", Retry.NEVER),
    ("nohost", Retry.NEVER), ("numhost", Retry.NEVER), ("abuse", Retry.NEVER),
    ("badagent", Retry.NEVER), ("dnserr", Retry.LATER), ("911", Retry.LATER),
    ("huh?", Retry.SOON), ("", Retry.SOON),
])
def test_dyndns2_codes(text: str, retry: Retry) -> None:
    with pytest.raises(DyndnsError) as info:
        interpret(HttpReply(200, text), REC, "198.51.100.1")
    assert info.value.retry is retry


def test_dyndns2_success_codes() -> None:
    good = interpret(HttpReply(200, "good 198.51.100.1\n"), REC, "198.51.100.1")
    assert (good.address, good.changed) == ("198.51.100.1", True)
    nochg = interpret(HttpReply(200, "nochg 198.51.100.1"), REC, "198.51.100.1")
    assert (nochg.address, nochg.changed) == ("198.51.100.1", False)


def test_record_type() -> None:
    assert record_type("192.0.2.1") == "A" and record_type("2001:db8::1") == "AAAA"


def test_build_parts_adds_the_dyndns_part_for_a_provider() -> None:
    from failberry.bus import Bus
    from failberry.config import parse
    from failberry.dyndns.part import DyndnsPart
    from failberry.parts import build_first
    from failberry.status import Status

    base = '[modem]\napn = "internet"\n'
    assert not [p for p in build_first(parse(base), Status(), Bus(), manage_network=False)
                if isinstance(p, DyndnsPart)]
    cfg = parse(base + '[dyndns]\nprovider = "dyndns2"\nname = "home.example.org"\n'
                '[dyndns.dyndns2]\nurl = "https://dyn.example/nic/update"\nusername = "u"\n'
                'password = "pw-not-logged"\n')
    parts = [p for p in build_first(cfg, Status(), Bus(), manage_network=False)
             if isinstance(p, DyndnsPart)]
    assert len(parts) == 1 and parts[0].name == "dyndns" and parts[0].provider == "dyndns2"
    assert [str(s.record) for s in parts[0].updater.states.values()] == ["home.example.org A"]


def test_a_check_before_any_address_does_not_count_as_first_contact() -> None:
    """Issue 12: the supervisor's part starts before the network part publishes; the first
    check must wait for the address, and not be "used up" without it."""
    st = RecordState(REC)
    assert verified(st, frozenset({"198.51.100.7"}), 0.0, 1.0, T) is None
    assert not st.checked
    set_desired(st, "198.51.100.7", "198.51.100.7")
    assert decide(st, 0.1) == Verify()


def test_failed_first_checks_are_retried_then_the_update_goes_out() -> None:
    st = RecordState(REC)
    set_desired(st, "198.51.100.7", None)
    rng = random.Random(3)
    now = 0.0
    for _ in range(FIRST_CHECK_TRIES):
        assert decide(st, now) == Verify()
        check_failed(st, DyndnsError("verify", "r", "timeout"), now, T, rng)
        assert not st.checked
        wait = decide(st, now)
        if st.check_failures < FIRST_CHECK_TRIES:
            assert isinstance(wait, Wait) and wait.until is not None and wait.until - now <= 8
            now = wait.until
    assert decide(st, now) == Update("198.51.100.7", None)


def test_a_successful_update_clears_a_stale_check_error() -> None:
    """Issue 15: /status last_error must not keep an old check's failure after a success."""
    st = RecordState(REC)
    set_desired(st, "198.51.100.7", None)
    for _ in range(FIRST_CHECK_TRIES):
        check_failed(st, DyndnsError("verify", "r", "no authoritative answer"), 0.0, T,
                     random.Random(1))
    assert record_view(st, 0.0, 0.0)["last_error"] == "verify: r: no authoritative answer"
    succeeded(st, "198.51.100.7", UpdateResult("198.51.100.7", True), 1.0, wall=1.0, timing=T)
    assert record_view(st, 1.0, 1.0)["last_error"] is None


def test_drift_is_checked_before_our_first_update() -> None:
    """Issue 11: with nothing published by us yet, a check still compares the record with the
    address we want, and a record holding another address is updated."""
    st = RecordState(REC)
    set_desired(st, "198.51.100.7", None)
    assert decide(st, 0.0) == Verify()
    assert verified(st, frozenset({"192.0.2.66"}), 0.0, 1.0, T) is None
    assert decide(st, 0.0) == Update("198.51.100.7", None)


def test_what_was_published_survives_a_restart() -> None:
    """route53-lambda behind NAT: the record holds the NAT address, not ours; after a restart
    the saved (sent, published) pair recognises it, so nothing is sent."""
    st = RecordState(REC)
    set_desired(st, "10.64.0.9", "10.64.0.9")
    succeeded(st, "10.64.0.9", UpdateResult("203.0.113.4", True), 0.0, wall=1.0, timing=T)
    saved = hold(st, 0.0, 1.0)
    assert saved == {"sent": "10.64.0.9", "published": "203.0.113.4"}
    again = RecordState(REC)
    restore(again, saved, 0.0, 2.0)
    set_desired(again, "10.64.0.9", "10.64.0.9")
    assert decide(again, 0.0) == Verify()
    assert verified(again, frozenset({"203.0.113.4"}), 0.0, 2.0, T) is None
    assert again.confirmed and decide(again, 0.0) == Wait(600.0)
    # Another local address: the saved pair does not apply, the update goes out.
    other = RecordState(REC)
    restore(other, saved, 0.0, 2.0)
    set_desired(other, "10.64.0.10", "10.64.0.10")
    verified(other, frozenset({"203.0.113.4"}), 0.0, 2.0, T)
    assert decide(other, 0.0) == Update("10.64.0.10", "10.64.0.10")
