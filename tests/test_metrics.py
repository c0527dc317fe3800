"""/metrics text built from a real status snapshot, checked by Prometheus's own promtool."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from failberry import config
from failberry.status import (
    DataUsage,
    DyndnsReport,
    FailoverEvent,
    ModemReport,
    NetworkReport,
    Status,
    UplinkReport,
    report_dyndns,
    report_modem,
    report_network,
)
from failberry.web import metrics
from failberry.web.health import HealthApp
from failberry.web.httpserver import HttpStats


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)


def _app(tmp_path: Path) -> tuple[HealthApp, Status]:
    path = tmp_path / "f.toml"
    path.write_text('[modem]\napn = "internet"\n[failover]\nmode = "gateway"\n'
                    '[uplink.wired]\ninterface = "eth1"\n')
    status = Status(state="running")
    stats = HttpStats()
    stats.requests.update({200: 41, 503: 2, 404: 1})
    stats.accepted, stats.evicted, stats.timed_out, stats.connections = 12, 3, 4, 2
    return HealthApp(status, config.load(path), stats, {"network": 1, "modem": 0}), status


def _full(status: Status) -> None:
    status.register("network", 2.0)
    report_network(status, "running", NetworkReport(
        active_uplink="mobile",
        uplinks={"wired": UplinkReport(up=False, reason="3/3 lost", interface="eth1",
                                       carrier=True, latency_ms=None, loss_pct=100.0,
                                       rx_bytes=1000, tx_bytes=2000),
                 "mobile": UplinkReport(up=True, reason="3/3 answer", interface="ppp0",
                                        carrier=True, address="10.64.0.7", latency_ms=48.5,
                                        loss_pct=0.0)},
        events=(FailoverEvent(time.time() - 60, "mobile", "wired", "wired: 3/3 lost"),),
        failovers_total=7,
        data=DataUsage(used_bytes=123_456_789, cap_bytes=10 * 2**30,
                       devices={"aa:bb:cc:dd:ee:01": 100_000_000,
                                'odd "name"\\with\nnewline': 5})))
    report_modem(status, "connected", ModemReport(signal_dbm=-67, operator="TestNet",
                                                  access_tech="LTE", bytes_in=10, bytes_out=20,
                                                  ladder_counts={"redial": 2, "reset": 0}))
    report_dyndns(status, "ok", DyndnsReport(name="pi.example.org", provider="rfc2136",
                                             address="10.64.0.7", last_success=1.7e9,
                                             last_confirmed=1.7e9 + 600))


@pytest.mark.timeout(60)
def test_full_snapshot_passes_promtool(tmp_path: Path) -> None:
    app, status = _app(tmp_path)
    _full(status)
    text = metrics.render(app.document())
    check = promtool(text)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = set(text.splitlines())
    for expected in (
        'failberry_uplink_up{uplink="mobile"} 1',
        'failberry_uplink_up{uplink="wired"} 0',
        'failberry_uplink_active{uplink="mobile"} 1',
        'failberry_uplink_latency_seconds{uplink="mobile"} 0.0485',
        'failberry_uplink_loss_ratio{uplink="wired"} 1',
        'failberry_uplink_receive_bytes_total{uplink="wired"} 1000',
        "failberry_failovers_total 7",
        "failberry_healthy 1",
        "failberry_mobile_data_used_bytes 123456789",
        "failberry_mobile_data_cap_bytes 10737418240",
        'failberry_mobile_device_data_used_bytes{device="odd \\"name\\"\\\\with\\nnewline"} 5',
        "failberry_modem_signal_dbm -67",
        'failberry_modem_state{state="connected"} 1',
        'failberry_modem_ladder_tries{rung="redial"} 2',
        "failberry_dyndns_last_success_timestamp_seconds 1700000000",
        "failberry_dyndns_error 0",
        'failberry_http_requests_total{code="503"} 2',
        'failberry_http_connections_dropped_total{reason="evicted"} 3',
        'failberry_part_restarts_total{part="network"} 1',
        "# TYPE failberry_failovers_total counter",
        "# TYPE failberry_uplink_up gauge",
    ):
        assert expected in lines, expected
    # The wired uplink reported no latency: no sample is invented for it.
    assert not any(line.startswith('failberry_uplink_latency_seconds{uplink="wired"}')
                   for line in lines)
    # Every family has HELP and TYPE.
    names = {line.split("{")[0].split(" ")[0] for line in lines if not line.startswith("#")}
    for name in names:
        assert name.startswith("failberry_")
        assert any(line.startswith(f"# HELP {name} ") for line in lines), name
        assert any(line.startswith(f"# TYPE {name} ") for line in lines), name


@pytest.mark.timeout(60)
def test_bare_supervisor_exposes_only_what_it_knows(tmp_path: Path) -> None:
    app, status = _app(tmp_path)
    status.register("loop", 5.0)
    text = metrics.render(app.document())
    assert promtool(text).returncode == 0
    assert "failberry_healthy 1" in text
    assert "failberry_uplink" not in text and "failberry_modem" not in text
    assert "failberry_failovers_total" not in text and "failberry_dyndns" not in text


def test_stale_part_and_health_fail_show() -> None:
    doc = {"status": "fail", "version": "0.1.0", "parts": {"network": {"age_s": 9.5,
                                                                       "stale": True}}}
    text = metrics.render(doc)
    assert "failberry_healthy 0" in text.splitlines()
    assert 'failberry_part_stale{part="network"} 1' in text.splitlines()
    assert 'failberry_part_report_age_seconds{part="network"} 9.5' in text.splitlines()
