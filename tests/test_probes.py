"""Probe targets and the verdict hysteresis (pure; the packets are in tests/net)."""

from __future__ import annotations

from failberry.probes import (
    MIN_TIMEOUT,
    HealthTracker,
    ProbeResult,
    Target,
    Thresholds,
    parse_target,
)

T = Thresholds(down=3, up=2, quorum=0, latency=1.0, loss_pct=20.0)


def rnd(*oks: bool, rtt: float = 0.01) -> list[ProbeResult]:
    return [ProbeResult(f"icmp:192.0.2.{i}", ok, rtt if ok else None, "" if ok else "timeout")
            for i, ok in enumerate(oks)]


def test_targets_parse() -> None:
    assert parse_target("icmp:1.1.1.1") == Target("icmp", "1.1.1.1")
    assert parse_target("tcp:[2001:db8::1]:443") == Target("tcp", "2001:db8::1", 443)
    assert parse_target("dns:9.9.9.9") == Target("dns", "9.9.9.9", 53)
    t = parse_target("https://example.net/x?y=1")
    assert (t.kind, t.host, t.port, t.label) == ("https", "example.net", 443,
                                                 "https://example.net/x?y=1")


def test_first_good_round_is_up_then_down_after_down_failed_rounds() -> None:
    h = HealthTracker(T)
    v = h.feed(rnd(True, True, True))
    assert v.up is True and v.changed
    for _ in range(2):
        v = h.feed(rnd(False, False, True))
        assert v.up is True and not v.changed and not v.round_ok
    v = h.feed(rnd(False, False, True))
    assert v.up is False and v.changed
    assert "3 failed rounds" in v.reason and "2 of 3 targets failed" in v.reason


def test_a_minority_of_failed_targets_does_not_fail_a_round() -> None:
    h = HealthTracker(Thresholds(3, 2, 0, 1.0, 100.0))
    for _ in range(10):
        v = h.feed(rnd(True, True, False))
    assert v.up is True and v.round_ok


def test_up_again_only_after_up_good_rounds() -> None:
    h = HealthTracker(Thresholds(1, 3, 0, 1.0, 100.0))
    h.feed(rnd(True, True, True))
    assert h.feed(rnd(False, False, False)).up is False
    assert h.feed(rnd(True, True, True)).up is False
    assert h.feed(rnd(True, True, True)).up is False
    v = h.feed(rnd(True, True, True))
    assert v.up is True and v.changed and "3 good rounds" in v.reason


def test_a_bad_round_restarts_the_good_count() -> None:
    h = HealthTracker(Thresholds(1, 2, 0, 1.0, 100.0))
    h.feed(rnd(True, True, True))
    h.feed(rnd(False, False, False))
    h.feed(rnd(True, True, True))
    h.feed(rnd(False, False, False))
    assert h.feed(rnd(True, True, True)).up is False


def test_loss_over_the_window_fails_rounds_that_quorum_would_pass() -> None:
    h = HealthTracker(Thresholds(3, 2, 3, 1.0, 20.0))  # quorum 3: only loss can fail a round
    pattern = [True, True, False]  # a third of the probes lost
    verdicts = [h.feed(rnd(*pattern)) for _ in range(6)]
    assert verdicts[0].up is True
    assert verdicts[-1].up is False
    assert "loss 33%" in verdicts[-1].reason
    assert verdicts[-1].loss_pct is not None and 33 < verdicts[-1].loss_pct < 34


def test_latency_over_the_threshold_fails_a_round() -> None:
    h = HealthTracker(Thresholds(1, 1, 0, 0.1, 100.0))
    h.feed(rnd(True, True, True))
    v = h.feed(rnd(True, True, True, rtt=0.3))
    assert v.up is False and "latency 300ms > 100ms" in v.reason


def test_timeout_follows_rtt_within_its_bounds() -> None:
    h = HealthTracker(T)
    assert h.timeout(0.5) == 0.5  # nothing seen yet: the interval
    h.feed(rnd(True, True, True, rtt=0.001))
    assert h.timeout(0.5) == MIN_TIMEOUT
    h.feed(rnd(True, True, True, rtt=0.1))
    assert h.timeout(0.5) == 0.4
    assert h.timeout(10) == 0.4
    h.feed(rnd(True, True, True, rtt=0.9))
    assert h.timeout(10) == 1.0  # never past the latency threshold


def test_reset_marks_down_and_forgets() -> None:
    h = HealthTracker(T)
    h.feed(rnd(True, True, True))
    v = h.reset("eth1 has no carrier")
    assert v.up is False and v.changed and v.reason == "eth1 has no carrier"
    assert h.loss_pct() is None
    assert not h.reset("again").changed
