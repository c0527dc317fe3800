"""The alerts part's pure core with a fed clock: the outbox (hold-down over a flapping
minute, rate limit, quiet hours, retries, restart), the translation of bus events, the
data-cap forecast over a synthetic month, and how status and /metrics show alerts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

import typed_status
from failberry import config, statuscmd
from failberry.alerts import forecast as fc
from failberry.alerts import translate
from failberry.alerts.build import build
from failberry.alerts.model import Alert, Event, Severity
from failberry.alerts.outbox import Outbox, Policy, in_quiet
from failberry.alerts.part import Clocks
from failberry.bus import (
    ActiveUplinkChanged,
    Bus,
    DyndnsBlocked,
    ModemStateChanged,
    PublishedAddressChanged,
)
from failberry.parts import Seams
from failberry.pihealth.events import AlertKind, HealthAlert
from failberry.pihealth.events import Severity as PiSeverity
from failberry.reports import AlertsReport
from failberry.status import DataUsage, NetworkReport, Status, alerts_view, report_network
from failberry.web import metrics

T0 = 1_700_000_000.0
GiB = 2**30
MiB = 2**20


def switch(i: int, at: float) -> Alert:
    kind = Event.FAILOVER if i % 2 == 0 else Event.FAILBACK
    return Alert(kind, Severity.WARNING, f"switch {i}", at)


# -- the outbox


def test_flapping_minute_is_one_message_per_hold_down() -> None:
    box = Outbox(Policy(hold_down=300))
    sent: list[tuple[float, str]] = []
    for i in range(10):  # ten switches in a minute
        t = T0 + 6 * i
        box.offer(switch(i, t), t)
        while (e := box.take(t)) is not None:
            sent.append((t, e.text()))
            box.sent(e, t)
    assert [s[1] for s in sent] == ["switch 0"]
    for t in (T0 + 120, T0 + 299):
        assert box.take(t) is None
    assert box.wake_at(T0 + 120) == T0 + 300
    e = box.take(T0 + 300)
    assert e is not None and e.count == 9
    assert e.text().startswith("switch 9 (8 more since ")
    box.sent(e, T0 + 300)
    assert box.take(T0 + 10_000) is None and box.held == {} and box.ready == []


def test_different_keys_are_not_folded_and_severity_rises() -> None:
    box = Outbox(Policy(hold_down=300))
    box.offer(switch(0, T0), T0)
    box.offer(Alert(Event.SIM, Severity.CRITICAL, "SIM gone", T0), T0)
    assert [e.alert.event for e in box.ready] == [Event.FAILOVER, Event.SIM]
    box.offer(switch(2, T0 + 1), T0 + 1)  # folded into the unsent failover
    box.offer(Alert(Event.NO_UPLINK, Severity.CRITICAL, "none", T0 + 2), T0 + 2)
    assert box.ready[0].count == 3 and box.ready[0].alert.severity is Severity.CRITICAL


def test_rate_limit_per_hour() -> None:
    box = Outbox(Policy(hold_down=0, max_per_hour=3))
    for i in range(5):
        box.offer(Alert(Event.TEST, Severity.INFO, f"m{i}", T0, key=f"k{i}"), T0)
    got = []
    while (e := box.take(T0)) is not None:
        got.append(e.alert.message)
        box.sent(e, T0)
    assert got == ["m0", "m1", "m2"]
    assert box.wake_at(T0 + 10) == T0 + 3600
    assert box.take(T0 + 3599) is None
    e = box.take(T0 + 3600)
    assert e is not None and e.alert.message == "m3"


def test_quiet_hours_hold_all_but_critical() -> None:
    minute = {"now": 23 * 60}
    box = Outbox(Policy(quiet=(22 * 60, 7 * 60)), minutes=lambda now: minute["now"])
    assert in_quiet((22 * 60, 7 * 60), 23 * 60) and in_quiet((22 * 60, 7 * 60), 6 * 60)
    assert not in_quiet((22 * 60, 7 * 60), 7 * 60) and not in_quiet((1, 2), 3)
    assert box.offer(switch(0, T0), T0) == "held"
    assert box.offer(Alert(Event.SIM, Severity.CRITICAL, "SIM gone", T0), T0) == "queued"
    e = box.take(T0)
    assert e is not None and e.alert.event is Event.SIM
    box.sent(e, T0)
    assert box.take(T0 + 3600) is None
    minute["now"] = 7 * 60
    e = box.take(T0 + 8 * 3600)
    assert e is not None and e.alert.message == "switch 0"


def test_retries_back_off_then_give_up() -> None:
    box = Outbox(Policy(retry_initial=10, retry_max=40, retry_for=100))
    box.offer(switch(0, T0), T0)
    times = []
    t = T0
    while True:
        e = box.take(t)
        if e is None:
            nxt = box.wake_at(t)
            if nxt is None:
                break
            t = nxt
            continue
        times.append(t - T0)
        if not box.failed(e, t, "no network"):
            break
    assert times == [0, 10, 30, 70, 110]  # 10, 20, 40, 40 s apart; gone after 100 s
    assert box.counts.failed == 5 and box.counts.dropped == 1 and box.ready == []


def test_hook_policy_runs_once() -> None:
    box = Outbox(Policy(retries=False))
    box.offer(switch(0, T0), T0)
    e = box.take(T0)
    assert e is not None and not box.failed(e, T0, "exit 1") and box.ready == []


def test_outbox_survives_a_restart_as_json() -> None:
    box = Outbox(Policy(hold_down=300))
    box.offer(switch(0, T0), T0)
    e = box.take(T0)
    assert e is not None
    box.sent(e, T0)
    box.offer(switch(1, T0 + 5), T0 + 5)
    box.offer(Alert(Event.SIM, Severity.CRITICAL, "SIM gone", T0 + 6), T0 + 6)
    again = Outbox(Policy(hold_down=300))
    again.restore(json.loads(json.dumps(box.to_json())))
    assert again.take(T0 + 7) is not None  # the SIM alert
    assert again.take(T0 + 8) is None  # the switch is held until the hold-down ends
    held = again.take(T0 + 300)
    assert held is not None and held.alert.message == "switch 1"
    assert again.counts.sent == 1 and again.next_id > held.id


# -- translation


def test_uplink_changes() -> None:
    tr = translate.Translator(300)
    assert tr.uplink(ActiveUplinkChanged("wired", None, "start"), T0) == []
    [a] = tr.uplink(ActiveUplinkChanged("mobile", "wired", "3/3 lost"), T0)
    assert a.event is Event.FAILOVER and a.message == "failover: wired -> mobile: 3/3 lost"
    [a] = tr.uplink(ActiveUplinkChanged(None, "mobile", "all down"), T0)
    assert a.event is Event.NO_UPLINK and a.severity is Severity.CRITICAL
    [a] = tr.uplink(ActiveUplinkChanged("wired", None, "wired back"), T0)
    assert a.event is Event.UPLINK_BACK and a.group == "uplink"
    assert a.message == "wired works again: wired back"
    [a] = tr.uplink(ActiveUplinkChanged("mobile", "wired", "3/3 lost"), T0)
    [a] = tr.uplink(ActiveUplinkChanged("wired", "mobile", "wired passes"), T0)
    assert a.event is Event.FAILBACK and a.severity is Severity.INFO


def test_modem_events_and_mobile_lost_after_n() -> None:
    tr = translate.Translator(300)
    assert tr.modem(ModemStateChanged("lost", "connected", "pppd exited 16"), T0) == []
    assert tr.check_lost(T0 + 299) == []
    [a] = tr.check_lost(T0 + 300)
    assert a.event is Event.MOBILE_LOST and "pppd exited 16" in a.message
    assert tr.check_lost(T0 + 900) == []  # once
    [a] = tr.modem(ModemStateChanged("resetting", "recovering",
                                     "recovery rung port_power (try 1)"), T0 + 400)
    assert a.event is Event.MODEM_RECOVERY and a.key == "modem_recovery:recovery rung port_power"
    [a] = tr.modem(ModemStateChanged("rebooting", "recovering", "recovery rung reboot"), T0)
    assert a.severity is Severity.CRITICAL
    [a] = tr.modem(ModemStateChanged("connected", "dialing", "ppp up"), T0 + 600)
    assert a.event is Event.MOBILE_BACK and "10 min" in a.message
    [a] = tr.modem(ModemStateChanged("sim_failed", "pin_sent", "PIN rejected"), T0)
    assert a.event is Event.SIM and a.severity is Severity.CRITICAL
    # Lost and back within N: nothing at all.
    tr.modem(ModemStateChanged("lost", "connected", "x"), T0)
    assert tr.modem(ModemStateChanged("connected", "dialing", "y"), T0 + 10) == []
    assert tr.check_lost(T0 + 1000) == []


def test_pi_health_and_dyndns() -> None:
    a = translate.health(HealthAlert(AlertKind.UNDERVOLTAGE, PiSeverity.CRITICAL,
                                     "under-voltage", T0, held_back=2))
    assert a.severity is Severity.CRITICAL and a.group == "pi:undervoltage"
    assert a.message == "under-voltage (2 more held back)"
    a = translate.dyndns(DyndnsBlocked("pi.example.org A", "abuse"), T0)
    assert a.event is Event.DYNDNS_BLOCKED and "abuse" in a.message


def test_rebooted_after_a_reboot_we_asked_for(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu 1 2 3\nbtime 1700000100\n")
    booted = translate.boot_time(tmp_path / "stat")
    assert booted == 1700000100.0
    alert, told = translate.rebooted([T0 - 86400, T0], booted, None, T0 + 200)
    assert alert is not None and told == T0 and alert.event is Event.REBOOTED
    assert translate.rebooted([T0], booted, told, T0 + 300) == (None, T0)  # once
    assert translate.rebooted([T0 - 86400], booted, None, T0)[0] is None  # not ours


# -- the forecast


def month_samples(start: float, days: int, lan_per_day: float, health_per_day: float,
                  every: float = 3600) -> list[fc.Sample]:
    out = []
    t = start
    while t < start + days * 86400:
        k = (t - start) / 86400
        out.append(fc.Sample(t, int(lan_per_day * k), int(health_per_day * k)))
        t += every
    return out


def test_forecast_synthetic_month() -> None:
    start = dt.datetime(2026, 11, 1).timestamp()
    # Ten days at 200 MiB/day of LAN and 100 MiB/day of health checks: 10 GiB is far.
    samples = month_samples(start, 10, 200 * MiB, 100 * MiB)
    now = samples[-1].at
    f = fc.forecast(samples, now, 10 * GiB, 1)
    assert f is not None and f.reach_at is None
    assert f.period_end == dt.datetime(2026, 12, 1).timestamp()
    assert f.rate == pytest.approx(200 * MiB / 86400, rel=1e-3)
    assert f.health_rate == pytest.approx(100 * MiB / 86400, rel=1e-3)
    days_left = (f.period_end - now) / 86400
    assert f.projected == pytest.approx(f.total + 300 * MiB * days_left, rel=1e-3)
    # The same month at 8 GiB cap: the health checks tip it over before the reset.
    f8 = fc.forecast(samples, now, 8 * GiB, 1)
    lan_only = [fc.Sample(s.at, s.used, 0) for s in samples]
    assert fc.forecast(lan_only, now, 8 * GiB, 1).reach_at is None  # type: ignore[union-attr]
    assert f8 is not None and f8.reach_at is not None and f8.reach_at < f8.period_end
    # Too little history: no forecast.
    assert fc.forecast(samples[:1], now, 8 * GiB, 1) is None


def test_data_watch_fractions_and_forecast_once_a_period() -> None:
    w = fc.DataWatch((80.0, 100.0), reset_day=1)
    start = dt.datetime(2026, 11, 1).timestamp()
    cap = 10 * GiB
    told: list[Alert] = []
    # A failover on day 20 moves 1 GiB/day through the mobile link.
    t = start
    used = 0.0
    while t < start + 30 * 86400:
        rate = 1 * GiB if t >= start + 20 * 86400 else 50 * MiB
        used += rate / 288
        told += w.observe(int(used), 0, cap, t)
        t += 300
    events = [(a.event, a.fields.get("percent")) for a in told]
    assert events == [(Event.DATA_FORECAST, None), (Event.DATA_CAP, "80"),
                      (Event.DATA_CAP, "100")]
    assert told[2].severity is Severity.CRITICAL
    forecast_at = told[0].at
    assert start + 20 * 86400 < forecast_at < start + 21 * 86400  # within a day of the burst
    # The next period re-arms them.
    nxt = dt.datetime(2026, 12, 1, 1).timestamp()
    assert [a.event for a in w.observe(int(9 * GiB), 0, cap, nxt)] == [Event.DATA_CAP]


# -- the part with a fed clock, status and metrics


def test_part_reports_data_cap_from_the_network_status(tmp_path: Path) -> None:
    cfg = config.parse(f'[modem]\napn = "x"\n[failover]\ndata_cap = "10GiB"\n'
                       f'[paths]\nstate_dir = "{tmp_path}"\n'
                       f'[alerts]\nhooks_dir = "{tmp_path}/hooks"\n')
    (tmp_path / "hooks").mkdir()
    out = tmp_path / "events"
    script = tmp_path / "hooks" / "log"
    script.write_text(f'#!/bin/sh\necho "$FAILBERRY_EVENT $FAILBERRY_PERCENT" >> {out}\n')
    script.chmod(0o755)
    status, bus = Status(), Bus()
    report_network(status, "ok", NetworkReport(
        active_uplink="mobile", uplinks={}, health_check_bytes=300 * MiB,
        data=DataUsage(used_bytes=int(8.5 * GiB), cap_bytes=10 * GiB)))
    clocks = Clocks(wall=lambda: T0, boot_time=lambda: None)

    async def scenario() -> None:
        part = build(cfg, Seams(status, bus), clocks=clocks, tick=0.05, data_every=0.05)
        task = asyncio.create_task(part.run())
        try:
            for _ in range(100):
                if out.exists():
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert out.read_text() == "data_cap 80\n"  # 8.8 GiB with the health checks: 80 % once
    detail = status.parts["alerts"].detail
    assert detail["health_check_bytes"] == 300 * MiB
    typed = typed_status.check(status.snapshot())["alerts"]  # the JSON is the dataclass's
    assert isinstance(typed, AlertsReport) and typed.channels["hooks"].sent == 1
    assert typed == alerts_view(status)[1]  # type: ignore[index]
    assert detail["recent"][-1]["event"] == "data_cap"
    assert detail["channels"]["hooks"]["sent"] == 1
    lines = statuscmd.render({"parts": {"alerts": {**detail, "forecast": {
        "projected_bytes": 11 * GiB, "reach_at": T0 + 86400}}}}, now=T0 + 60)
    text = "\n".join(lines)
    assert "alerts: hooks 1 sent" in text
    assert "60s ago  mobile data 8.8 GiB of 10.0 GiB (88%, cap warning at 80%)" in text
    assert "data at the reset: about 11.0 GiB, cap reached" in text


def test_metrics_count_alerts_per_channel() -> None:
    doc = {"parts": {"alerts": {
        "channels": {"sms:+491701234567": {"sent": 3, "failed": 1, "dropped": 0, "queued": 1,
                                           "held": 1},
                     "webhook:ntfy.sh": {"sent": 2, "failed": 0, "dropped": 1, "queued": 0,
                                         "held": 0}},
        "health_check_bytes": 1234, "forecast": {"projected_bytes": 5678}}}}
    text = metrics.render(doc)
    assert 'failberry_alerts_sent_total{channel="sms:+491701234567"} 3' in text
    assert 'failberry_alerts_failed_total{channel="sms:+491701234567"} 1' in text
    assert 'failberry_alerts_dropped_total{channel="webhook:ntfy.sh"} 1' in text
    assert 'failberry_alerts_queued{channel="sms:+491701234567"} 2' in text
    assert "failberry_mobile_health_check_bytes 1234" in text
    assert "failberry_mobile_data_forecast_bytes 5678" in text
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_defaults_and_errors() -> None:
    a = config.parse('[modem]\napn = "x"\n').alerts
    assert a.hooks_dir == "/etc/failberry/hooks.d" and a.cap_warnings == (80.0, 100.0)
    assert a.hold_down == 300 and a.sms_to == ()
    with pytest.raises(config.ConfigError) as info:
        config.parse('[modem]\napn = "x"\n[alerts]\nsms_to = ["12ab"]\n'
                     'webhooks = ["teams https://x.example"]\nquiet_hours = "22:00"\n')
    paths = sorted(i.path for i in info.value.issues)
    assert paths == ["alerts.quiet_hours", "alerts.sms_to", "alerts.webhooks"]
    with pytest.raises(config.ConfigError) as info:
        config.parse('[modem]\napn = "x"\n[alerts]\nretry_initial = "1h"\nretry_max = "1m"\n')
    assert [i.path for i in info.value.issues] == ["alerts.retry_max"]


def test_dyndns_part_publishes_a_block_once() -> None:
    """The dynamic DNS part tells the bus when the provider blocks a record (badauth)."""
    from failberry.dyndns.base import DyndnsError, Record, Retry, UpdateResult
    from failberry.dyndns.part import DyndnsPart
    from failberry.dyndns.updater import Timing, Updater

    class Refusing:
        kind = "test"
        calls = 0

        def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
            self.calls += 1
            raise DyndnsError("test", str(record), "badauth", retry=Retry.NEVER)

    class Empty:
        def lookup(self, record: Record) -> frozenset[str]:
            return frozenset()

    async def scenario() -> list[DyndnsBlocked]:
        bus = Bus()
        blocked = bus.subscribe(DyndnsBlocked)
        updater = Updater(Refusing(), Empty(), [Record("pi.example.org", "A", 60)],
                          timing=Timing(retry_initial=0.01, retry_max=0.02))
        part = DyndnsPart(updater, Status(), bus, provider="test", report_every=0.05)
        task = asyncio.create_task(part.run())
        bus.publish(PublishedAddressChanged("192.0.2.7", "mobile"))
        got = [await asyncio.wait_for(blocked.get(), 5)]
        await asyncio.sleep(0.3)
        while not blocked.empty():
            got.append(blocked.get_nowait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return got

    got = asyncio.run(scenario())
    assert len(got) == 1 and got[0].record.startswith("pi.example.org")
    assert "badauth" in got[0].reason
