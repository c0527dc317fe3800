"""The clock without an RTC (issue 18): when the wall clock can be trusted, and the dynamic DNS
updates and HTTPS alerts that wait for it ("waiting for time") and go once it is good."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from failberry import config, statuscmd
from failberry.alerts.model import Alert, Event, Severity
from failberry.alerts.outbox import Policy
from failberry.alerts.part import AlertsPart
from failberry.alerts.spec import parse_webhook
from failberry.alerts.webhook import WebhookChannel
from failberry.bus import Bus, PublishedAddressChanged
from failberry.dyndns.base import Record, UpdateResult
from failberry.dyndns.part import DyndnsPart
from failberry.dyndns.updater import Timing, Updater
from failberry.status import Status
from failberry.timegate import ClockFacts, ClockState, TimeGate, read_clock


def _facts(tmp: Path, *, systemd: bool = True) -> ClockFacts:
    facts = ClockFacts(synchronized=tmp / "run/timesync/synchronized",
                       rtc_class=tmp / "sys/class/rtc", systemd_run=tmp / "run/systemd/system",
                       timesyncd=tmp / "lib/systemd/systemd-timesyncd")
    if systemd:
        facts.systemd_run.mkdir(parents=True)
        facts.timesyncd.parent.mkdir(parents=True)
        facts.timesyncd.write_text("")
    return facts


def test_the_clock_waits_only_where_something_will_synchronise_it(tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    unsynced: Callable[[], bool | None] = lambda: False  # noqa: E731
    state = read_clock(facts, unsynced)
    assert not state.good and "not synchronised" in state.why
    # An RTC that did not set the clock (hctosys 0) does not count...
    rtc = facts.rtc_class / "rtc0"
    rtc.mkdir(parents=True)
    (rtc / "hctosys").write_text("0\n")
    assert not read_clock(facts, unsynced).good
    # ...one the kernel set the time from at boot does (QEMU virt's PL031, an RTC hat).
    (rtc / "hctosys").write_text("1\n")
    assert read_clock(facts, unsynced) == ClockState(
        True, "set from the real-time clock rtc0 at boot")
    (rtc / "hctosys").write_text("0\n")
    # The kernel's own flag (any NTP daemon) and timesyncd's file.
    assert read_clock(facts, lambda: True).good
    facts.synchronized.parent.mkdir(parents=True)
    facts.synchronized.write_text("")
    assert read_clock(facts, unsynced).why == "synchronised by systemd-timesyncd"
    # A machine nothing synchronises (no systemd, no timesyncd) never waits.
    bare = _facts(tmp_path / "bare", systemd=False)
    assert read_clock(bare, unsynced).good


def test_the_gate_opens_when_the_clock_is_good_and_stays_open() -> None:
    good = [False]
    checks = [0]

    def check() -> ClockState:
        checks[0] += 1
        return ClockState(good[0], "ntp" if good[0] else "not yet")

    gate = TimeGate(check, clock=lambda: 0.0)
    assert gate.waiting and gate.why == "not yet"
    good[0] = True
    assert not gate.waiting and gate.why == "ntp"
    good[0] = False  # once good, never asked again: a clock step back does not hold again
    seen = checks[0]
    assert not gate.waiting and checks[0] == seen


def test_the_gate_gives_up_waiting_after_its_limit() -> None:
    now = [0.0]
    gate = TimeGate(lambda: ClockState(False, "no NTP answer"), max_wait=900,
                    clock=lambda: now[0])
    assert gate.waiting
    now[0] = 899.0
    assert gate.waiting
    now[0] = 900.0
    assert not gate.waiting and gate.why == "no NTP answer; going on after 900s"


class _Switch:
    """The clock check a test turns good."""

    def __init__(self) -> None:
        self.good = False

    def __call__(self) -> ClockState:
        return ClockState(self.good, "synchronised" if self.good else "no NTP answer yet")


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(30)
def test_dns_updates_wait_for_time_and_go_once_it_is_good() -> None:
    class Recording:
        kind = "test"

        def __init__(self) -> None:
            self.calls: list[str] = []

        def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
            self.calls.append(address)
            return UpdateResult(address, changed=True)

    class Answers:
        def lookup(self, record: Record) -> frozenset[str]:
            return frozenset()

    async def scenario() -> None:
        provider, switch, status, bus = Recording(), _Switch(), Status(), Bus()
        updater = Updater(provider, Answers(), [Record("pi.example.org", "A", 60)],
                          timing=Timing(retry_initial=0.01, retry_max=0.02))
        part = DyndnsPart(updater, status, bus, provider="test", report_every=0.05,
                          time_gate=TimeGate(switch, poll=0.02))
        task = asyncio.create_task(part.run())
        try:
            bus.publish(PublishedAddressChanged("192.0.2.7", "mobile"))
            await _until(lambda: status.parts.get("dyndns") is not None
                         and status.parts["dyndns"].state == "waiting for time")
            await asyncio.sleep(0.3)
            assert provider.calls == []  # held: TSIG would fail with this clock
            detail = status.parts["dyndns"].detail
            assert detail["waiting_for"] == "time: no NTP answer yet"
            # nothing published yet: those facts are left out of each record, not null
            assert all(v is not None for r in detail["records"] for v in r.values()), detail
            doc = {"dyndns": {"state": "waiting for time", **detail}}
            assert "  waiting for time: no NTP answer yet" in statuscmd.render(doc)
            switch.good = True
            await _until(lambda: provider.calls == ["192.0.2.7"])
            await _until(lambda: status.parts["dyndns"].state != "waiting for time")
            assert status.parts["dyndns"].detail.get("waiting_for") is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


class _Post:
    def __init__(self) -> None:
        self.urls: list[str] = []

    def post_json(self, url: str, body: dict[str, object], timeout: float) -> int:
        self.urls.append(url)
        return 200


@pytest.mark.timeout(30)
def test_https_alerts_wait_for_time_and_plain_http_does_not(tmp_path: Path) -> None:
    cfg = config.parse('[modem]\napn = "internet"\n')
    post = _Post()
    policy = Policy(hold_down=0.0, retry_initial=0.05)
    tls = WebhookChannel("webhook:tls", parse_webhook("json https://hooks.example/a"), policy,
                         timeout=1, http=post, host="pi")
    plain = WebhookChannel("webhook:plain", parse_webhook("json http://192.0.2.1/b"), policy,
                           timeout=1, http=post, host="pi")
    assert tls.needs_time and not plain.needs_time

    async def scenario() -> None:
        switch, status = _Switch(), Status()
        part = AlertsPart(cfg, status, Bus(), [tls, plain], state_path=tmp_path / "a.json",
                          tick=0.05, time_gate=TimeGate(switch, poll=0.02))
        task = asyncio.create_task(part.run())
        try:
            part.tell([Alert(Event.FAILOVER, Severity.WARNING, "wired down", at=1.0)])
            await _until(lambda: post.urls == ["http://192.0.2.1/b"])
            await asyncio.sleep(0.3)
            assert post.urls == ["http://192.0.2.1/b"]  # the HTTPS one is held
            part.report()
            alerts = status.parts["alerts"]
            assert alerts.state == "waiting for time"
            channel = alerts.detail["channels"]["webhook:tls"]
            assert channel["waiting_for"] == "time: no NTP answer yet"
            assert channel["queued"] == 1
            switch.good = True
            await _until(lambda: "https://hooks.example/a" in post.urls)
            part.report()
            assert "waiting_for" not in status.parts["alerts"].detail["channels"]["webhook:tls"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
