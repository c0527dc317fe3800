"""The Pi health part's facts where the admin sees them: /status and /metrics from the real
supervisor (checked by promtool), `failberry status`, and the `[pihealth]` config section."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

import typed_status
from conftest import run_cli
from failberry import config, statuscmd
from failberry.bus import Bus, ModemStateChanged
from failberry.config import Config
from failberry.errors import ConfigError
from failberry.parts import Part
from failberry.pihealth.events import AlertKind, HealthAlert
from failberry.pihealth.part import PiHealthPart
from failberry.reports import PiHealthReport
from failberry.status import Status
from failberry.supervisor import Supervisor
from failberry.web import metrics
from pihealth_fakes import WALL0, FakeClock, PiTree

NOW = WALL0 + 5000.0


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _serve(cfg: Config, make: object) -> tuple[dict[str, object], str, list[HealthAlert]]:
    """Run the real supervisor with only the Pi health part; /status, /metrics and the alerts
    after a modem climb published on its bus."""
    alerts: list[HealthAlert] = []

    def parts(c: Config, status: Status, bus: Bus) -> list[Part]:
        assert callable(make)
        return [make(c, status, bus)]

    async def scenario() -> tuple[dict[str, object], str]:
        sup = Supervisor(cfg, port=0, host="127.0.0.1", parts=parts)
        q = sup.bus.subscribe(HealthAlert)
        task = asyncio.create_task(sup.run())
        for _ in range(500):
            if "pihealth" in sup.status.parts and sup.status.parts["pihealth"].detail:
                break
            await asyncio.sleep(0.01)
        sup.bus.publish(ModemStateChanged("resetting", "recovering", "rung modem_reset"))
        await asyncio.sleep(0.2)
        code, body = await _get(sup.http.port, "/status")
        assert code == 200
        mcode, mbody = await _get(sup.http.port, "/metrics")
        assert mcode == 200
        while not q.empty():
            alerts.append(q.get_nowait())
        q.close()
        sup.request_stop("test")
        await task
        return json.loads(body), mbody.decode()

    doc, text = asyncio.run(scenario())
    return doc, text, alerts


@pytest.mark.timeout(60)
def test_supervisor_serves_pi_health_in_status_and_metrics(tmp_path: Path) -> None:
    import time

    pi = PiTree(tmp_path)
    pi.hwmon(alarm=0)
    pi.zone(0, 51_540)
    pi.zone(1, 49_000, kind="gpu-thermal")
    pi.root()
    t = time.monotonic()
    pi.log(t - 100.0, "hwmon hwmon1: Undervoltage detected!", prio=2)
    pi.log(t - 96.0, "hwmon hwmon1: Voltage normalised")
    pi.log(t - 30.0, "hwmon hwmon1: Undervoltage detected!", prio=2)
    pi.log(t - 28.0, "hwmon hwmon1: Voltage normalised")
    pi.log(t - 20.0, "mmcblk0: error -110 transferring data, sector 8, nr 8", prio=3)
    cfg = config.parse('[modem]\napn = "internet"\n[pihealth]\ninterval = "100ms"\n')

    def make(c: Config, status: Status, bus: Bus) -> PiHealthPart:
        return PiHealthPart(status, bus, c.pihealth, sys_root=pi.sys, kmsg=pi.kmsg,
                            mounts=pi.mounts)

    doc, text, alerts = _serve(cfg, make)
    pih = doc["parts"]["pihealth"]  # type: ignore[index]
    assert pih["state"] == "ok" and not pih["stale"]
    typed = typed_status.check(doc)["pihealth"]  # the JSON is the dataclass's, key for key
    assert isinstance(typed, PiHealthReport) and typed.power is not None
    assert typed.power.events_total == 2 and typed.kernel_log is None
    assert pih["power"]["events_total"] == 2
    assert pih["power"]["seconds_total"] == pytest.approx(6.0, abs=0.2)
    assert pih["temperature"]["zones"] == {"cpu-thermal": 51.5, "gpu-thermal": 49.0}
    assert pih["storage"]["errors_total"] == 1 and pih["storage"]["root_readonly"] is False

    check = promtool(text)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = set(text.splitlines())
    for expected in ("failberry_undervoltage 0", "failberry_undervoltage_events_total 2",
                     'failberry_temperature_celsius{zone="cpu-thermal"} 51.5',
                     'failberry_temperature_celsius{zone="gpu-thermal"} 49',
                     "failberry_temperature_warning_celsius 80",
                     "failberry_temperature_hot 0", "failberry_root_filesystem_readonly 0",
                     "failberry_sd_errors_total 1", "# TYPE failberry_sd_errors_total counter"):
        assert expected in lines, expected

    kinds = [a.kind for a in alerts]
    assert kinds == [AlertKind.SD_ERROR, AlertKind.MODEM_POWER]
    assert alerts[1].message.startswith("modem reset: under-voltage seen 28 s before")
    assert pih["alerts"][-1]["message"] == alerts[1].message


@pytest.mark.timeout(60)
def test_supervisor_on_a_board_without_the_files(tmp_path: Path) -> None:
    """QEMU's virt board: no hwmon, no thermal zone, a kernel log without Pi lines."""
    cfg = config.parse('[modem]\napn = "internet"\n[pihealth]\ninterval = "100ms"\n')

    def make(c: Config, status: Status, bus: Bus) -> PiHealthPart:
        return PiHealthPart(status, bus, c.pihealth, sys_root=tmp_path / "sys",
                            kmsg=tmp_path / "kmsg", mounts=tmp_path / "mounts")

    doc, text, alerts = _serve(cfg, make)
    pih = doc["parts"]["pihealth"]  # type: ignore[index]
    assert pih["state"] == "ok" and pih["alerts"] == [] and alerts == []
    assert typed_status.check(doc)["pihealth"] == PiHealthReport(
        warnings=(), kernel_log=pih["kernel_log"])
    for absent in ("power", "temperature", "throttle", "storage"):
        assert absent not in pih
    check = promtool(text)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "undervoltage" not in text and "temperature" not in text
    lines = statuscmd.render(doc, now=NOW)
    assert "pi: no power or temperature sensors on this board" in lines
    assert all("?" not in line and "None" not in line for line in lines[2:])


def _pi_doc(**pihealth: object) -> dict[str, object]:
    return {"status": "ok", "reason": "mobile up", "state": "running", "mode": "sidecar",
            "version": "0.1.0", "uptime_s": 60,
            "parts": {"pihealth": {"state": "warning", "stale": False, **pihealth}}}


def test_status_command_shows_power_heat_and_sd_card() -> None:
    doc = _pi_doc(
        warnings=["under-voltage", "root read-only"],
        power={"undervoltage": True, "events_total": 3, "seconds_total": 14.0,
               "events_last_hour": 1, "seconds_last_hour": 4.0, "last_seen_at": NOW},
        temperature={"zones": {"cpu-thermal": 81.4}, "max_celsius": 81.4,
                     "warning_celsius": 80.0, "hot": True},
        storage={"root_readonly": True, "root_device": "/dev/mmcblk0p2", "errors_total": 2,
                 "errors_last_hour": 2, "last_error": "mmcblk0: error -110",
                 "last_error_at": NOW - 300},
        alerts=[{"kind": "modem_power", "severity": "warning", "at": NOW - 60,
                 "message": "modem reset: under-voltage seen 12 s before; check the power "
                            "supply"}])
    lines = statuscmd.render(doc, now=NOW)
    assert ("pi: UNDER-VOLTAGE NOW, under-voltage 3x (0m 14s) since boot, 1x in the last hour, "
            "81 °C HOT, ROOT READ-ONLY, 2 SD errors") in lines
    assert "  last SD error 5m ago: mmcblk0: error -110" in lines
    assert ("  last warning 60s ago: modem reset: under-voltage seen 12 s before; check the "
            "power supply") in lines


def test_status_command_healthy_pi() -> None:
    doc = _pi_doc(warnings=[],
                  power={"undervoltage": False, "events_total": 0, "seconds_total": 0.0,
                         "events_last_hour": 0, "seconds_last_hour": 0.0,
                         "last_seen_at": None},
                  temperature={"zones": {"cpu-thermal": 47.2}, "max_celsius": 47.2,
                               "warning_celsius": 80.0, "hot": False},
                  storage={"root_readonly": False, "errors_total": 0, "last_error": None},
                  alerts=[])
    assert statuscmd.render(doc, now=NOW)[-1] == (
        "pi: under-voltage 0x (0m 0s) since boot, 0x in the last hour, 47 °C, root rw, "
        "0 SD errors")


def test_metrics_with_every_pi_field_pass_promtool(tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock(5000.0)
    pi.hwmon(alarm=1)
    pi.throttled(0x50005)
    pi.zone(0, 83_000)
    pi.root("ro")
    pi.log(4990.0, "hwmon hwmon1: Undervoltage detected!", prio=2)
    part = PiHealthPart(Status(state="running"), Bus(), sys_root=pi.sys, kmsg=pi.kmsg,
                        mounts=pi.mounts, clock=clock)
    part.open()
    part.poll()
    part.report()
    doc = {"version": "0.1.0", "status": "ok",
           "parts": part.status.snapshot()["parts"]}
    text = metrics.render(doc)
    check = promtool(text)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = set(text.splitlines())
    for expected in ("failberry_undervoltage 1", "failberry_undervoltage_events_total 1",
                     "failberry_undervoltage_seconds_total 10",
                     'failberry_firmware_throttle{condition="under_voltage"} 1',
                     'failberry_firmware_throttle{condition="freq_capped"} 0',
                     "failberry_temperature_hot 1", "failberry_root_filesystem_readonly 1"):
        assert expected in lines, expected
    assert part.status.parts["pihealth"].state == "warning"
    assert part.status.parts["pihealth"].detail["warnings"] == [
        "under-voltage", "hot", "root read-only"]


def test_pihealth_config_section() -> None:
    cfg = config.parse('[modem]\napn = "x"\n[pihealth]\ntemperature_warning = 70\n'
                       'interval = "2s"\nalert_interval = "1h"\n')
    assert cfg.pihealth == config.PihealthConfig(interval=2.0, temperature_warning=70.0,
                                                 alert_interval=3600.0)
    assert config.Config().pihealth.temperature_warning == 80.0
    with pytest.raises(ConfigError) as e:
        config.parse('[modem]\napn = "x"\n[pihealth]\ntemperature_warning = 500\nfoo = 1\n')
    issues = {str(i) for i in e.value.issues}
    assert "pihealth.temperature_warning: must be from 20 to 150 degrees Celsius, not 500" in issues
    assert any(i.startswith("pihealth.foo: unknown key") for i in issues)


def test_config_check_accepts_the_section(tmp_path: Path) -> None:
    f = tmp_path / "f.toml"
    f.write_text('[modem]\napn = "x"\n[pihealth]\ntemperature_warning = "hot"\n')
    proc = run_cli(["config", "check", "-c", str(f)])
    assert proc.returncode == 2 and "pihealth.temperature_warning" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_parts_includes_pi_health() -> None:
    from failberry.parts import build_first

    cfg = config.parse('[modem]\napn = "x"\n[pihealth]\ntemperature_warning = 70\n')
    [pih] = [p for p in build_first(cfg, Status(), Bus(), manage_network=False)
             if p.name == "pihealth"]
    assert isinstance(pih, PiHealthPart) and pih.cfg.temperature_warning == 70.0


def test_this_machine_is_another_board(tmp_path: Path) -> None:
    """The real /sys, /dev/kmsg and /proc/mounts of this (non-Pi) machine: read without an
    error, and the report and the status command make sense of whatever is there."""
    status = Status(state="running")
    part = PiHealthPart(status, Bus())
    part.open()
    part.poll()
    part.report()
    part.close()
    report = status.parts["pihealth"]
    assert set(report.detail) <= {"warnings", "power", "throttle", "temperature", "storage",
                                  "kernel_log", "alerts"}
    assert report.detail["storage"]["root_readonly"] in (True, False)
    doc = {"status": "ok", "reason": "running", "state": "running", "version": "0.1.0",
           "uptime_s": 1, "parts": status.snapshot()["parts"]}
    assert statuscmd.render(doc)[-1].startswith("pi: ")
    check = promtool(metrics.render(doc))
    assert check.returncode == 0, check.stdout + check.stderr
