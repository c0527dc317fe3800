"""Probe targets and the verdict hysteresis (pure; the packets are in tests/net)."""

from __future__ import annotations

import asyncio

from failberry.net.prober import NameCache, SocketProber, _checksum, echo_request, is_echo_reply
from failberry.net.probes import (
    MIN_TIMEOUT,
    Binding,
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


# --- ICMP reply matching (pure) ---------------------------------------------------------------

def ip_header(proto: int = 1) -> bytes:
    return bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 192, 0, 2, 1, 203, 0, 113, 2])


def reply_to(request: bytes) -> bytes:
    """What the target sends back: type 0, the rest echoed (checksum not re-checked here)."""
    return b"\0" + request[1:]


def test_each_concurrent_probe_matches_only_its_own_reply() -> None:
    # Three probes in flight at once (one round, three targets): each must take its own reply
    # and only it, whatever order the replies come in.
    probes = [(0x1234, seq, f"payload-{seq}".encode()) for seq in (7, 8, 9)]
    replies = [reply_to(echo_request(*p)) for p in probes]
    for ident, seq, payload in probes:
        for raw in (True, False):
            hits = [r for r in replies
                    if is_echo_reply(ip_header() + r if raw else r, raw=raw, ident=ident,
                                     seq=seq, payload=payload)]
            assert hits == [reply_to(echo_request(ident, seq, payload))]


def test_a_raw_socket_ignores_other_identifiers_requests_and_short_packets() -> None:
    req = echo_request(0x1234, 5, b"x")
    assert is_echo_reply(ip_header() + reply_to(req), raw=True, ident=0x1234, seq=5,
                         payload=b"x")
    other = echo_request(0x4321, 5, b"x")  # somebody's ping with the same sequence
    assert not is_echo_reply(ip_header() + reply_to(other), raw=True, ident=0x1234, seq=5,
                             payload=b"x")
    # A datagram socket's identifier is the kernel's: it is not compared.
    assert is_echo_reply(reply_to(other), raw=False, ident=0x1234, seq=5, payload=b"x")
    assert not is_echo_reply(ip_header() + req, raw=True, ident=0x1234, seq=5, payload=b"x")
    assert not is_echo_reply(ip_header() + reply_to(req)[:6], raw=True, ident=0x1234, seq=5,
                             payload=b"x")
    assert not is_echo_reply(b"", raw=True, ident=0x1234, seq=5, payload=b"x")


def test_echo_request_checksum_is_valid() -> None:
    req = echo_request(0xBEEF, 0xFFFF, b"failberry-odd")  # odd length: padded for the sum
    assert _checksum(req) == 0


# --- target names -----------------------------------------------------------------------------

class ScriptedNames(NameCache):
    """Lookups answered from a script; a missing answer is the resolver failing."""

    def __init__(self, answers: list[str | None], clock: list[float]) -> None:
        super().__init__(ttl=300, clock=lambda: clock[0])
        self.answers = answers
        self.asked = 0

    async def lookup(self, host: str) -> str:
        self.asked += 1
        answer = self.answers.pop(0)
        if answer is None:
            raise OSError(f"{host}: Temporary failure in name resolution")
        return answer


def test_a_name_is_looked_up_once_and_kept_when_lookups_fail_later() -> None:
    # The system resolver leaves through the active uplink: when that path dies, lookups
    # fail, and the backup's probes must still know where to go.
    now = [0.0]

    async def main() -> None:
        names = ScriptedNames(["198.51.100.7", None, "198.51.100.8"], now)
        assert await names.resolve("9.9.9.9") == "9.9.9.9"  # a literal: no lookup
        assert names.asked == 0
        assert await names.resolve("probe.example") == "198.51.100.7"
        assert await names.resolve("probe.example") == "198.51.100.7"
        assert names.asked == 1
        now[0] = 301.0  # stale: used at once, looked up again in the background
        assert await names.resolve("probe.example") == "198.51.100.7"
        await asyncio.sleep(0)
        assert names.asked == 2  # that lookup failed: the old address stays
        assert await names.resolve("probe.example") == "198.51.100.7"
        await asyncio.sleep(0)
        assert names.asked == 3
        assert await names.resolve("probe.example") == "198.51.100.8"

    asyncio.run(main())


def test_a_name_never_found_fails_the_probe() -> None:
    async def main() -> ProbeResult:
        prober = SocketProber(ScriptedNames([None], [0.0]))
        return await prober.probe(Binding("lo", "127.0.0.1"), Target("icmp", "nowhere.example"),
                                  1.0)

    r = asyncio.run(main())
    assert not r.ok and "Temporary failure" in r.error
