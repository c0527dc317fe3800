"""Bus subscriptions end with the part that made them: SIGHUP reloads leave no queue behind."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dyndns_nobody import Nobody
from failberry import config
from failberry.alerts.build import build as build_alerts
from failberry.bus import (
    ActiveUplinkChanged,
    AddressChanged,
    Bus,
    DyndnsBlocked,
    ModemStateChanged,
    PublishedAddressChanged,
)
from failberry.config import Config
from failberry.dyndns.base import Record
from failberry.dyndns.part import DyndnsPart
from failberry.dyndns.updater import Updater
from failberry.parts import Part, Recipe, Seams
from failberry.pihealth.events import HealthAlert
from failberry.pihealth.part import PiHealthPart
from failberry.status import Status
from failberry.supervisor import Supervisor


def test_a_closed_subscription_gets_no_events() -> None:
    bus = Bus()
    with bus.subscribe(DyndnsBlocked) as sub:
        bus.publish(DyndnsBlocked("a", "x"))
        assert bus.subscribers(DyndnsBlocked) == 1
    assert sub.closed and bus.subscribers(DyndnsBlocked) == 0
    bus.publish(DyndnsBlocked("b", "y"))
    assert sub.qsize() == 1
    sub.close()  # twice is harmless


def test_a_scope_closes_what_was_subscribed_through_it() -> None:
    bus = Bus()
    mine = bus.subscribe(DyndnsBlocked)
    view = bus.scope()
    theirs = view.subscribe(DyndnsBlocked)
    view.subscribe(HealthAlert)
    assert bus.subscribers(DyndnsBlocked) == 2
    view.close()
    assert theirs.closed and not mine.closed
    assert bus.subscribers(DyndnsBlocked) == 1 and bus.subscribers(HealthAlert) == 0


def _cfg_file(path: Path, tmp: Path, apn: str) -> Path:
    path.write_text(f'[modem]\napn = "{apn}"\n'
                    f'[paths]\nrun_dir = "{tmp / "run"}"\nstate_dir = "{tmp / "state"}"\n')
    return path


def _parts(tmp: Path, builds: list[int]) -> Callable[[Config, Status, Bus], list[Part]]:
    """The real parts that subscribe in `__init__`: dyndns, alerts, Pi health."""
    def parts(cfg: Config, status: Status, bus: Bus) -> list[Part]:
        builds.append(1)
        updater = Updater(Nobody(), Nobody(),  # type: ignore[arg-type]
                          [Record("pi.example.org", "A", 60)])
        return [DyndnsPart(updater, status, bus, provider="test"),
                build_alerts(cfg, Seams(status, bus)),
                PiHealthPart(status, bus, sys_root=tmp / "sys", kmsg=tmp / "no-kmsg",
                             mounts=tmp / "mounts")]
    return parts


@pytest.mark.timeout(60)
def test_ten_sighup_reloads_leave_one_subscriber_per_part(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _cfg_file(tmp_path / "f.toml", tmp_path, "internet")
    (tmp_path / "mounts").write_text("/dev/root / ext4 rw 0 0\n")
    builds: list[int] = []

    async def until(cond: Callable[[], bool]) -> None:
        end = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < end, "condition not reached"
            await asyncio.sleep(0.01)

    async def scenario() -> Bus:
        sup = Supervisor(config.load(path), port=0, host="127.0.0.1",
                         parts=_parts(tmp_path, builds), config_path=path)
        sup.bus.maxsize = 5  # an abandoned queue fills after five events
        task = asyncio.create_task(sup.run())
        await until(lambda: sup.status.state == "running" and len(builds) == 1)
        for i in range(10):
            _cfg_file(path, tmp_path, f"apn{i}")
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda i=i: len(builds) == i + 2)  # type: ignore[misc]
        for _ in range(20):  # nobody acts on these: no uplink, no address
            sup.bus.publish(PublishedAddressChanged(None, None))
            sup.bus.publish(ModemStateChanged("searching", "searching", "test"))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        counts = {k: sup.bus.subscribers(k) for k in (
            PublishedAddressChanged, AddressChanged, ActiveUplinkChanged, ModemStateChanged,
            HealthAlert, DyndnsBlocked)}
        sup.request_stop("test")
        await task
        assert counts == {PublishedAddressChanged: 1, AddressChanged: 1,  # dyndns
                          ActiveUplinkChanged: 2,  # dyndns, alerts
                          ModemStateChanged: 2,  # alerts, Pi health
                          HealthAlert: 1, DyndnsBlocked: 1}  # alerts
        return sup.bus

    with caplog.at_level(logging.INFO):
        bus = asyncio.run(scenario())
    assert len(builds) == 11
    assert not [r for r in caplog.records if "full" in r.getMessage()]
    assert all(bus.subscribers(k) == 0 for k in (PublishedAddressChanged, ModemStateChanged))


class _Crashy:
    """Subscribes when built, crashes on its first two runs; the supervisor builds a fresh one
    from its recipe each time."""

    name = "crashy"
    deadline = 30.0

    def __init__(self, seams: Seams, runs: list[int], kept: list[object]) -> None:
        self.runs = runs
        kept.append(seams.kept)
        self.sub = seams.bus.subscribe(DyndnsBlocked)

    def handover(self) -> int:
        return len(self.runs)

    async def run(self) -> None:
        self.runs.append(1)
        if len(self.runs) <= 2:
            raise RuntimeError("boom")
        await asyncio.Event().wait()


@pytest.mark.timeout(30)
def test_a_part_replaced_after_a_crash_leaves_one_subscriber(tmp_path: Path) -> None:
    from failberry.supervisor import Timing

    path = _cfg_file(tmp_path / "f.toml", tmp_path, "internet")
    runs: list[int] = []
    kept: list[object] = []

    async def scenario() -> tuple[int, int]:
        sup = Supervisor(config.load(path), port=0, host="127.0.0.1",
                         parts=lambda c, s, b: [Recipe("crashy",
                                                       lambda seams: _Crashy(seams, runs, kept))],
                         timing=Timing(restart_initial=0.01, restart_max=0.02))
        task = asyncio.create_task(sup.run())
        end = time.monotonic() + 10
        while len(runs) < 3:
            assert time.monotonic() < end
            await asyncio.sleep(0.01)
        running = sup.bus.subscribers(DyndnsBlocked)
        sup.request_stop("test")
        await task
        return running, sup.bus.subscribers(DyndnsBlocked)

    assert asyncio.run(scenario()) == (1, 0)
    assert kept == [None, 1, 2]  # each fresh object got what the crashed one handed over
