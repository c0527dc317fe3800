"""`failberry status`: the summary of a /status document, the CLI against a running (fake)
supervisor, and the message when none runs. Also the status contract's readers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import free_port, run_cli
from failberry import reports, statuscmd
from failberry.status import (
    DataUsage,
    FailoverEvent,
    NetworkReport,
    Status,
    UplinkReport,
    network_view,
    report_network,
)
from test_health import supervisor, wait_for


def _doc() -> dict[str, object]:
    now = 1_800_000_000.0
    return {
        "status": "ok", "reason": "mobile up", "state": "running", "mode": "sidecar",
        "version": "0.1.0", "uptime_s": 3 * 3600 + 120,
        "active_uplink": "mobile",
        "uplinks": {
            "mobile": {"up": True, "active": True, "interface": "ppp0",
                       "address": "10.64.0.7", "latency_ms": 48.2, "loss_pct": 0.0,
                       "reason": "3/3 answer"},
            "wired": {"up": False, "active": False, "interface": "eth1", "reason": "3/3 lost",
                      "loss_pct": 100.0},
        },
        "modem": {"state": "connected", "signal_dbm": -67, "operator": "TestNet",
                  "access_tech": "LTE", "address": "10.64.0.7"},
        "data": {"used_bytes": 3 * 2**30, "cap_bytes": 10 * 2**30,
                 "devices": {"laptop": 2 * 2**30, "phone": 2**30}},
        "failovers_total": 4,
        "events": [{"at": now - 300, "uplink": "mobile", "previous": "wired",
                    "reason": "wired: 3/3 lost"}],
        "dyndns": {"state": "ok", "name": "pi.example.org", "address": "10.64.0.7",
                   "last_success": now - 290, "last_confirmed": now - 60},
        "parts": {"network": {"stale": False}, "dyndns": {"stale": True}},
    }


def test_render_one_screen_summary() -> None:
    lines = statuscmd.render(_doc(), now=1_800_000_000.0)
    text = "\n".join(lines)
    assert len(lines) <= 24
    assert lines[0] == "failberry 0.1.0: running, mode sidecar, up 3h 2m"
    assert lines[1] == "health: OK (mobile up)"
    assert "modem: connected, signal -67 dBm, TestNet, LTE, address 10.64.0.7" in lines
    assert ("  mobile  UP   (active) ppp0 10.64.0.7 rtt 48 ms loss 0% - 3/3 answer"
            in lines)
    assert "  wired   DOWN eth1 loss 100% - 3/3 lost" in lines
    assert "mobile data: 3.0 GiB of 10.0 GiB (30%)" in lines
    assert "  top: laptop 2.0 GiB, phone 1.0 GiB" in lines
    assert "last failovers (4 in all):" in lines
    assert "     5m ago  wired -> mobile: wired: 3/3 lost" in lines
    assert ("dns: pi.example.org -> 10.64.0.7 (ok), updated 5m ago, confirmed 60s ago"
            in lines)
    assert text.endswith("not reporting: dyndns")


def test_render_bare_supervisor() -> None:
    lines = statuscmd.render({"status": "fail", "reason": "supervisor stopping",
                              "state": "stopping", "mode": "gateway", "version": "0.1.0",
                              "uptime_s": 5})
    assert lines == ["failberry 0.1.0: stopping, mode gateway, up 0m 5s",
                     "health: FAIL (supervisor stopping)", "modem: not reported",
                     "uplinks: not reported"]


def test_network_view_reads_the_typed_report() -> None:
    """The view is the object the part published (no second spelling to map); its JSON form
    in the snapshot parses back to an equal report."""
    st = Status(state="running")
    st.register("network", 5.0)
    rep = NetworkReport(
        active_uplink="wired",
        uplinks={"wired": UplinkReport(up=True, reason="ok", link=True, carrier=True),
                 "mobile": UplinkReport(up=None, reason="no probe yet")},
        events=(FailoverEvent(1.0, "wired", None, "start"),),
        data=DataUsage(used_bytes=15, cap_bytes=100, devices={"aa:bb": 10, "cc:dd": 5}))
    report_network(st, "ok", rep)
    view = network_view(st)
    assert view is not None and view.current and view.report is rep
    detail = st.snapshot()["parts"]["network"]
    assert reports.parse(NetworkReport, {k: v for k, v in detail.items()
                                         if k not in ("state", "age_s", "stale")}) == rep
    with pytest.raises(ValueError, match="unknown keys"):
        reports.parse(NetworkReport, {**detail})
    st.report("network", "ok", active_uplink="wired", uplinks={})  # untyped: not a report
    view = network_view(st)
    assert view is not None and view.active_uplink is None and not view.uplinks
    assert network_view(Status()) is None


def test_report_may_carry_name_and_state_keys() -> None:
    st = Status()
    st.report("dyndns", "ok", name="pi.example.org", state="published")
    assert st.parts["dyndns"].state == "ok"
    assert st.parts["dyndns"].detail == {"name": "pi.example.org", "state": "published"}


@pytest.mark.timeout(60)
def test_cli_against_a_running_supervisor(tmp_path: Path) -> None:
    with supervisor(tmp_path, used=2**30, cap=4 * 2**30) as run:
        run.uplinks(mobile=True, wired=False)
        wait_for(run, "/health", 200, 3)
        time.sleep(0.5)
        # The URL comes from the config's health port, on 127.0.0.1.
        cfg = tmp_path / "cli.toml"
        cfg.write_text(f'[modem]\napn = "internet"\n[health]\nport = {run.port}\n')
        proc = run_cli(["status", "-c", str(cfg)])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("failberry ")
        assert "health: OK (mobile up)" in proc.stdout
        assert "modem: connected, signal -71 dBm, TestNet, LTE" in proc.stdout
        assert "mobile data: 1.0 GiB of 4.0 GiB (25%)" in proc.stdout
        proc = run_cli(["status", "--json", "--url", f"http://127.0.0.1:{run.port}/status"])
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["active_uplink"] == "mobile" and doc["uplinks"]["wired"]["up"] is False


@pytest.mark.timeout(60)
def test_cli_when_nothing_runs(tmp_path: Path) -> None:
    port = free_port()
    proc = run_cli(["status", "--url", f"http://127.0.0.1:{port}/status"])
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("failberry: error: the supervisor is not running")
    assert f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[modem]\napn = "internet"\n[health]\nport = {port}\n')
    proc = run_cli(["status", "--json", "-c", str(cfg)])
    assert proc.returncode == 1 and "not running" in proc.stderr


def test_status_url_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[modem]\napn = "internet"\n[health]\nport = 9100\nlisten = "0.0.0.0"\n')
    assert statuscmd.status_url(cfg) == "http://127.0.0.1:9100/status"
    cfg.write_text('[modem]\napn = "internet"\n[health]\nlisten = "192.168.1.2"\n')
    assert statuscmd.status_url(cfg) == "http://192.168.1.2:9000/status"
    assert statuscmd.status_url(tmp_path / "missing.toml") == "http://127.0.0.1:9000/status"


@pytest.mark.parametrize("url", ["notaurl", "http://[::1", "file:///etc/hostname",
                                 "ftp://127.0.0.1/status"])
def test_cli_bad_url_is_one_line_and_exit_2(url: str) -> None:
    """A mistyped --url is bad input: one line naming it, exit 2, never a traceback (and
    never a local file or an FTP fetch read as if it were the supervisor)."""
    proc = run_cli(["status", "--url", url])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and f"--url: {url}" in proc.stderr


def _nulls(value: object, where: str = "") -> list[str]:
    """Every key path in `value` whose value is null."""
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{where}[{i}]")]
    return []


def test_status_of_a_pi_without_its_stick_has_no_nulls_for_absent_values() -> None:
    """The example config on a Pi booted without the stick: what is absent (the modem's
    operator, the mobile link's address, a DNS name, a warning) is left out of /status, not
    null; null is left only where it is the value: no active uplink, nothing probed yet. The
    document still reads back strictly as the typed reports."""
    from failberry import config
    from failberry.modem.state import ModemState
    from failberry.status import report_modem
    from failberry.web.health import HealthApp
    from failberry.web.httpserver import HttpStats

    st = Status()
    report_network(st, "down", NetworkReport(
        active_uplink=None, uplinks={"mobile": UplinkReport(False, "ppp0 is gone", "ppp0",
                                                            carrier=False, link=False)},
        data=DataUsage(0, devices={"*": 0})))
    s = ModemState()
    report_modem(st, s.phase.value, reports.ModemReport(
        reason=s.reason, ladder_counts=s.ladder_counts, reboots_last_day=0, reboots_per_day=1,
        reboot_budget_spent=False))
    cfg = config.load(Path(__file__).parents[1] / "examples" / "failberry.toml")
    doc = HealthApp(st, cfg, HttpStats()).document()
    assert _nulls(doc) == [".active_uplink", ".parts.network.active_uplink"]
    assert "dyndns" not in doc and "inbound_warning" not in doc
    modem = {k: v for k, v in doc["modem"].items() if k not in ("state", "age_s", "stale")}
    assert reports.parse(reports.ModemReport, modem).operator is None
    net = {k: v for k, v in doc["parts"]["network"].items()
           if k not in ("state", "age_s", "stale")}
    assert reports.parse(reports.NetworkReport, net).uplinks["mobile"].address is None
    assert statuscmd.render(doc)[2] == (
        "modem: absent, no modem found yet; waiting for one to be plugged in")


def test_status_shows_a_channel_waiting_for_time_and_parts_that_were_rebuilt() -> None:
    """Two things /status had and `failberry status` did not show: a webhook held back until
    the clock is synchronised (issue 18: "waiting for time"), and parts that crashed and were
    rebuilt (the supervisor's restart counts)."""
    doc = {"status": "ok", "state": "running",
           "parts": {"alerts": {"channels": {
               "webhook:ntfy.sh": {"sent": 0, "queued": 1,
                                   "waiting_for": "time: the clock is not synchronised yet"},
               "hooks": {"sent": 2}}}},
           "restarts": {"network": 2, "modem": 0, "alerts": 0}}
    lines = statuscmd.render(doc, now=0.0)
    assert ("alerts: webhook:ntfy.sh 0 sent 1 queued (waiting for time: the clock is not "
            "synchronised yet); hooks 2 sent") in lines
    assert "restarts: network 2 (crashed and rebuilt; see the journal)" in lines
    doc["restarts"] = {"network": 0}
    assert not [ln for ln in statuscmd.render(doc, now=0.0) if ln.startswith("restarts")]
