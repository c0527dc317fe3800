"""The Pi health part against a fake /sys tree and a kernel log file the test writes:
under-voltage counted from the kernel lines and the rpi_volt alarm, temperature, SD card
errors, the read-only root, rate-limited alerts on the bus, the modem ladder's log line, and
boards that have none of these files."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

import pytest

from failberry.bus import Bus, ModemStateChanged
from failberry.config import PihealthConfig
from failberry.pihealth import kmsg
from failberry.pihealth.events import AlertKind, HealthAlert, Severity
from failberry.pihealth.part import PiHealthPart
from failberry.pihealth.tracker import Line, PowerTracker, RateLimit, classify
from failberry.status import Status
from pihealth_fakes import FakeClock, PiTree

UV = "hwmon hwmon1: Undervoltage detected!"
OK = "hwmon hwmon1: Voltage normalised"
LOGGER = "failberry.pihealth.part"


def _part(pi: PiTree, clock: FakeClock, bus: Bus | None = None,
          cfg: PihealthConfig | None = None) -> PiHealthPart:
    return PiHealthPart(Status(state="running"), bus or Bus(), cfg, sys_root=pi.sys,
                        kmsg=pi.kmsg, mounts=pi.mounts, clock=clock)


def _alerts(q: asyncio.Queue[HealthAlert]) -> list[HealthAlert]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


# -- the kernel's words


@pytest.mark.parametrize(("text", "kind"), [
    ("hwmon hwmon1: Undervoltage detected!", Line.UNDERVOLTAGE),
    ("raspberrypi-firmware soc:firmware: Under-voltage detected! (0x00050005)", Line.UNDERVOLTAGE),
    ("hwmon hwmon1: Voltage normalised", Line.VOLTAGE_OK),
    ("Voltage normalised (0x00000000)", Line.VOLTAGE_OK),
    ("mmcblk0: error -110 transferring data, sector 4196, nr 8, cmd response 0x900, "
     "card status 0xb00", Line.SD_ERROR),
    ("I/O error, dev mmcblk0, sector 1234 op 0x1:(WRITE) flags 0x800 phys_seg 1", Line.SD_ERROR),
    ("Buffer I/O error on dev mmcblk0p2, logical block 5, lost async page write", Line.SD_ERROR),
    ("mmc0: timeout waiting for hardware interrupt.", Line.SD_ERROR),
    ("EXT4-fs error (device mmcblk0p2): ext4_lookup:1855: inode #2: comm ls: iget: bad extra_isize",
     Line.SD_ERROR),
    ("EXT4-fs (mmcblk0p2): Remounting filesystem read-only", Line.SD_ERROR),
    ("Aborting journal on device mmcblk0p2-8.", Line.SD_ERROR),
    # Not errors: the mount line's option, the card arriving, the Wi-Fi SDIO host.
    ("EXT4-fs (mmcblk0p2): mounted filesystem with ordered data mode. Opts: errors=remount-ro",
     None),
    ("mmcblk0: mmc0:aaaa SC16G 14.8 GiB", None),
    ("mmc1: queuing unknown CIS tuple 0x80 (2 bytes)", None),
    ("mmc1: timeout waiting for hardware interrupt.", None),
])
def test_classify_kernel_lines(text: str, kind: Line | None) -> None:
    assert classify(text) is kind


def test_kmsg_record_format() -> None:
    rec = kmsg.parse("2,1234,5678901234,-;hwmon hwmon1: Undervoltage detected!\n")
    assert rec == kmsg.Record(2, 1234, 5678.901234, "hwmon hwmon1: Undervoltage detected!")
    assert kmsg.parse(" SUBSYSTEM=platform") is None
    assert kmsg.parse("12,5,100,-,caller=T1;x") == kmsg.Record(4, 5, 0.0001, "x")
    assert kmsg.parse("no header here") == kmsg.Record(6, None, None, "no header here")


def test_tail_file_follows_appends_partial_lines_and_replacement(tmp_path: Path) -> None:
    f = tmp_path / "kmsg"
    f.write_text("6,1,1000000,-;first\n")
    tail = kmsg.TailFile(f)
    assert [r.text for r in tail.read_new()] == ["first"]
    assert tail.read_new() == []
    with f.open("a") as out:
        out.write("6,2,2000000,-;second\n6,3,3000000,-;thi")
    assert [r.text for r in tail.read_new()] == ["second"]
    with f.open("a") as out:
        out.write("rd\n")
    assert [r.text for r in tail.read_new()] == ["third"]
    f.write_text("6,1,500000,-;after a reboot\n")  # shorter: read from the start
    assert [r.text for r in tail.read_new()] == ["after a reboot"]


@pytest.mark.timeout(10)
@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="needs a readable /dev/kmsg")
def test_dev_kmsg_reads_the_real_ring_buffer_without_blocking() -> None:
    src, problem = kmsg.open_source(kmsg.DEV_KMSG)
    assert problem is None and isinstance(src, kmsg.DevKmsg)
    try:
        history = src.read_new()
        assert history, "the kernel log holds at least its boot lines"
        seqs = [r.seq for r in history if r.seq is not None]
        assert seqs == sorted(seqs) and all(r.at is not None for r in history)
        later = src.read_new()  # returns at EAGAIN instead of waiting for new records
        assert all(r.seq is not None and r.seq > seqs[-1] for r in later)
    finally:
        src.close()


def test_dev_kmsg_skips_overwritten_records() -> None:
    """EPIPE: the record we were about to read was overwritten; carry on with the next."""
    script: list[bytes | BaseException] = [
        b"6,1,1000000,-;one\n", BrokenPipeError(), b"2,9,2000000,-;Undervoltage detected!\n",
        BlockingIOError()]

    def fake_read(fd: int, n: int) -> bytes:
        item = script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    r, w = os.pipe()  # any descriptor will do for the constructor's open
    os.close(w)
    try:
        src = kmsg.DevKmsg(Path(f"/proc/self/fd/{r}"), read=fake_read)
        assert [x.text for x in src.read_new()] == ["one", "Undervoltage detected!"]
        assert src.lost == 1
        src.close()
    finally:
        os.close(r)


def test_unreadable_or_missing_kernel_log_is_no_error(tmp_path: Path) -> None:
    src, problem = kmsg.open_source(tmp_path / "nope")
    assert src.read_new() == [] and problem is not None and "does not exist" in problem
    src, problem = kmsg.open_source(tmp_path)
    assert src.read_new() == [] and problem is not None


# -- the pure bookkeeping


def test_power_tracker_counts_events_and_seconds_since_boot_and_last_hour() -> None:
    p = PowerTracker()
    assert p.update(True, 100.0) and not p.update(True, 101.0)  # one event, two sources
    p.update(False, 104.0)
    assert p.update(True, 5000.0)
    p.update(False, 5010.0)
    assert p.update(True, 6000.0)
    assert p.events_total == 3 and p.active and p.since == 6000.0
    now = 6005.0
    assert p.seconds_total(now) == pytest.approx(4 + 10 + 5)
    assert p.events_within(now) == 2  # the one at 100 s is more than an hour old
    assert p.seconds_within(now) == pytest.approx(10 + 5)
    p.update(False, 6006.0)
    assert p.last_seen(7000.0) == 6006.0 and p.seconds_within(5000.0 + 3600 + 5) == \
        pytest.approx(5 + 6)


def test_rate_limit_holds_back_and_counts() -> None:
    r = RateLimit(60.0)
    assert r.allow("sd_error", 0.0) == 0
    assert r.allow("sd_error", 10.0) is None and r.allow("sd_error", 20.0) is None
    assert r.allow("heat", 20.0) == 0  # per kind
    assert r.allow("sd_error", 61.0) == 2


# -- the part


def test_undervoltage_on_off_counted_from_the_kernel_log(tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock(1000.0)
    pi.hwmon(alarm=0)
    pi.log(2.5, "Booting Linux on physical CPU 0x0", prio=5)
    pi.log(10.0, UV, prio=2)
    pi.log(14.0, OK)
    bus = Bus()
    q = bus.subscribe(HealthAlert)
    part = _part(pi, clock, bus)
    part.open()
    part.poll()
    d = part.detail()
    assert d["power"] == {"undervoltage": False, "events_total": 1, "seconds_total": 4.0,
                          "events_last_hour": 1, "seconds_last_hour": 4.0,
                          "last_seen_at": clock.time() - (1000.0 - 14.0)}
    assert _alerts(q) == []  # history is counted, not alerted line by line

    clock.now = 5000.0
    pi.log(4990.0, UV, prio=2)
    pi.alarm(1)  # the driver sets the alarm, then prints the line
    part.poll()
    assert part.power.active and part.warnings() == ["under-voltage"]
    [alert] = _alerts(q)
    assert alert.kind is AlertKind.UNDERVOLTAGE and alert.severity is Severity.WARNING
    assert alert.message.startswith("under-voltage detected (kernel log; 1 in the last hour)")
    clock.now = 5010.0
    pi.log(5003.0, OK)
    pi.alarm(0)
    part.poll()
    part.report()
    report = part.status.parts["pihealth"]
    assert report.state == "ok" and report.detail["warnings"] == []
    assert report.detail["power"]["events_total"] == 2
    assert report.detail["power"]["seconds_total"] == pytest.approx(4.0 + 13.0)
    assert report.detail["power"]["seconds_last_hour"] == pytest.approx(13.0)


def test_undervoltage_from_the_rpi_volt_alarm_alone_and_not_counted_twice(
        tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock(500.0)
    pi.hwmon(alarm=0)
    part = _part(pi, clock)
    part.open()
    part.poll()
    assert part.detail()["power"]["events_total"] == 0  # the driver exists: zero, not absent
    pi.alarm(1)
    clock.now = 505.0
    part.poll()
    assert part.power.active and part.power.events_total == 1
    pi.log(503.0, UV, prio=2)  # the same event's line, read a poll later
    clock.now = 510.0
    part.poll()
    assert part.power.events_total == 1 and part.power.since == 503.0
    pi.log(508.0, OK)
    pi.alarm(0)
    clock.now = 515.0
    part.poll()
    assert not part.power.active and part.power.seconds_total(515.0) == pytest.approx(5.0)


def test_firmware_get_throttled_bits(tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock()
    pi.throttled(0x50005)  # under-voltage and throttled now, both also since boot
    part = _part(pi, clock)
    part.poll()
    d = part.detail()
    assert d["throttle"]["under_voltage"] and d["throttle"]["throttled"]
    assert not d["throttle"]["freq_capped"] and d["throttle"]["under_voltage_occurred"]
    assert d["power"]["undervoltage"] is True


def test_modem_ladder_climb_names_recent_undervoltage(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pi, clock = PiTree(tmp_path), FakeClock(1000.0)
    bus = Bus()
    q = bus.subscribe(HealthAlert)
    part = _part(pi, clock, bus)
    part.open()
    part.poll()
    pi.log(987.0, UV, prio=2)
    pi.log(988.0, OK)  # the brown-out's line arrives just before the climb: read first
    with caplog.at_level(logging.INFO, logger=LOGGER):
        text = part.on_modem(ModemStateChanged("resetting", "recovering", "recovery rung "
                                               "modem_reset (try 1)"))
    assert text == "modem reset: under-voltage seen 12 s before; check the power supply"
    logged = [r for r in caplog.records if r.getMessage() == text]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    kinds = [a.kind for a in _alerts(q)]
    assert kinds == [AlertKind.UNDERVOLTAGE, AlertKind.MODEM_POWER]

    # Still going on when the modem gives up: said so.
    clock.now = 1100.0
    pi.log(1090.0, UV, prio=2)
    assert part.on_modem(ModemStateChanged("recovering", "connected", "pppd exited 16")) == \
        "modem recovery: under-voltage now (for 10 s); check the power supply"

    # More than a minute after the supply recovered: the climb is not blamed on it.
    pi.log(1101.0, OK)
    clock.now = 1162.0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert part.on_modem(ModemStateChanged("rebooting", "resetting", "rung reboot")) is None
        assert part.on_modem(ModemStateChanged("connected", "dialing", "up")) is None
    assert not [r for r in caplog.records if "under-voltage" in r.getMessage()]


def test_temperature_warning_with_hysteresis_and_zone_names(tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock()
    pi.zone(0, 47_234)
    pi.zone(1, "garbage", kind="broken")
    pi.zone(10, 40_000, kind="cpu-thermal")  # a second zone of the same type
    bus = Bus()
    q = bus.subscribe(HealthAlert)
    part = _part(pi, clock, bus, PihealthConfig(temperature_warning=75.0, alert_interval=0))
    part.poll()
    assert part.detail()["temperature"] == {
        "zones": {"cpu-thermal": 47.2, "cpu-thermal-10": 40.0}, "max_celsius": 47.2,
        "warning_celsius": 75.0, "hot": False}
    pi.zone(0, 76_500)
    part.poll()
    [alert] = _alerts(q)
    assert alert.kind is AlertKind.HEAT and alert.message == \
        "cpu-thermal at 76.5 °C (warning at 75 °C)"
    pi.zone(0, 72_000)  # within the hysteresis: still hot, no new alert
    part.poll()
    assert part.heat.hot and _alerts(q) == []
    pi.zone(0, 69_000)
    part.poll()
    assert not part.heat.hot
    pi.zone(0, 75_000)
    part.poll()
    assert [a.kind for a in _alerts(q)] == [AlertKind.HEAT]


def test_sd_errors_and_read_only_root_alerts_are_rate_limited(tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock(100.0)
    pi.root("rw,noatime")
    pi.log(20.0, "mmcblk0: error -110 transferring data, sector 4196, nr 8", prio=3)
    bus = Bus()
    q = bus.subscribe(HealthAlert)
    part = _part(pi, clock, bus, PihealthConfig(alert_interval=600.0))
    part.open()
    part.poll()
    [summary] = _alerts(q)
    assert summary.kind is AlertKind.SD_ERROR and summary.severity is Severity.CRITICAL
    assert summary.message.startswith("SD card: 1 error(s) in the kernel log since boot")
    clock.now = 700.0
    for i in range(50):  # a failing card floods the log
        pi.log(650.0 + i, f"Buffer I/O error on dev mmcblk0p2, logical block {i}", prio=3)
    pi.log(699.0, "EXT4-fs (mmcblk0p2): Remounting filesystem read-only", prio=2)
    pi.root("ro,noatime")
    part.poll()
    alerts = _alerts(q)
    assert [a.kind for a in alerts] == [AlertKind.SD_ERROR, AlertKind.ROOT_READONLY]
    assert alerts[0].message == "SD card: Buffer I/O error on dev mmcblk0p2, logical block 0"
    assert "/dev/mmcblk0p2) is read-only" in alerts[1].message
    storage = part.detail()["storage"]
    assert storage["errors_total"] == 52 and storage["errors_last_hour"] == 52
    assert storage["root_readonly"] is True
    assert storage["last_error"] == "EXT4-fs (mmcblk0p2): Remounting filesystem read-only"
    clock.now = 1400.0
    pi.log(1399.0, "I/O error, dev mmcblk0, sector 8", prio=3)
    part.poll()
    [later] = _alerts(q)
    assert later.held_back == 50 and later.kind is AlertKind.SD_ERROR


def test_board_without_any_of_the_files(tmp_path: Path) -> None:
    """QEMU, another SBC: no hwmon, no thermal zones, no firmware, no kernel log, no mounts."""
    part = PiHealthPart(Status(state="running"), Bus(), sys_root=tmp_path / "sys",
                        kmsg=tmp_path / "kmsg", mounts=tmp_path / "mounts", clock=FakeClock())
    part.open()
    part.poll()
    part.report()
    report = part.status.parts["pihealth"]
    assert report.state == "ok"
    assert report.detail == {"warnings": [], "kernel_log": f"{tmp_path / 'kmsg'} does not exist",
                             "alerts": []}


def test_kernel_log_without_a_pi_has_no_power_fields(tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock()
    pi.root()
    pi.log(1.0, "Booting Linux on physical CPU 0x0")
    part = _part(pi, clock)
    part.open()
    part.poll()
    d = part.detail()
    assert "power" not in d and "temperature" not in d and "throttle" not in d
    assert d["storage"]["errors_total"] == 0 and d["storage"]["root_readonly"] is False


@pytest.mark.timeout(20)
def test_running_part_follows_the_log_and_the_bus(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The real loop and clock: a line appended while the part runs, then a modem climb
    published on the bus, produce the ladder's log line and the alerts."""
    pi = PiTree(tmp_path)
    pi.hwmon(alarm=0)
    pi.root()

    async def scenario() -> list[HealthAlert]:
        import time

        bus = Bus()
        q = bus.subscribe(HealthAlert)
        status = Status(state="running")
        part = PiHealthPart(status, bus, PihealthConfig(interval=0.05), sys_root=pi.sys,
                            kmsg=pi.kmsg, mounts=pi.mounts)
        task = asyncio.create_task(part.run())
        while "pihealth" not in status.parts:
            await asyncio.sleep(0.01)
        pi.log(time.monotonic() - 3.0, UV, prio=2)
        pi.log(time.monotonic() - 1.0, OK)
        alert = await asyncio.wait_for(q.get(), 5)
        assert alert.kind is AlertKind.UNDERVOLTAGE
        bus.publish(ModemStateChanged("resetting", "recovering", "rung modem_reset"))
        alert = await asyncio.wait_for(q.get(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert part.source is None  # let go of the log on cancel
        return [alert]

    with caplog.at_level(logging.INFO, logger=LOGGER):
        [alert] = asyncio.run(scenario())
    assert alert.kind is AlertKind.MODEM_POWER
    assert alert.message.startswith("modem reset: under-voltage seen ")
    assert alert.message.endswith(" s before; check the power supply")
    assert any(r.getMessage() == alert.message for r in caplog.records)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("skew", [500.0, -300.0])
def test_kernel_clock_apart_from_ours_is_measured(tmp_path: Path, skew: float) -> None:
    """On a Pi the printk clock runs raw while NTP slews CLOCK_MONOTONIC: after weeks they
    are minutes apart. Records read the moment they arrive (a pipe here, /dev/kmsg on the
    Pi, both polled by the loop) measure the difference, so lines read late still place the
    brown-out right."""
    import time

    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)

    async def scenario() -> HealthAlert:
        bus = Bus()
        q = bus.subscribe(HealthAlert)
        status = Status(state="running")
        part = PiHealthPart(status, bus, PihealthConfig(interval=60.0), sys_root=tmp_path,
                            kmsg=fifo, mounts=tmp_path / "mounts")
        task = asyncio.create_task(part.run())
        while "pihealth" not in status.parts:
            await asyncio.sleep(0.01)
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            def kline(ago: float, text: str) -> bytes:
                return f"6,1,{int((time.monotonic() - ago + skew) * 1e6)},-;{text}\n".encode()

            os.write(fd, kline(0.0, "usb 1-1.2: new high-speed USB device number 5"))
            while not part._offsets:
                await asyncio.sleep(0.01)
            # Read late (as at a poll): the brown-out 12 s ago, over 11 s ago.
            os.write(fd, kline(12.0, UV) + kline(11.0, OK))
            while part.power.events_total == 0 or part.power.active:
                await asyncio.sleep(0.01)
        finally:
            os.close(fd)
        bus.publish(ModemStateChanged("resetting", "recovering", "rung modem_reset"))
        while True:
            alert = await asyncio.wait_for(q.get(), 5)
            if alert.kind is AlertKind.MODEM_POWER:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return alert

    alert = asyncio.run(scenario())
    assert re.fullmatch(r"modem reset: under-voltage seen 1[12] s before; check the power supply",
                        alert.message), alert.message


def test_hwmon_driver_loaded_after_the_start_is_found(tmp_path: Path) -> None:
    pi, clock = PiTree(tmp_path), FakeClock()
    part = _part(pi, clock)
    part.poll()
    assert "power" not in part.detail()
    pi.hwmon(alarm=1)
    part.poll()
    assert part.detail()["power"]["undervoltage"] is True
