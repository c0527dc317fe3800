"""One part contract: every part is built by `build(cfg, seams)`; after a crash the supervisor
builds a fresh object from the part's recipe, handing it what the crashed one kept and the bus
queues it left open; subscriptions made in `run` end with it. No root, no hardware."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dyndns_nobody import Nobody
from failberry import config
from failberry.bus import Bus, DyndnsBlocked, UplinkHealth
from failberry.dyndns.base import Record
from failberry.dyndns.part import DyndnsPart
from failberry.dyndns.updater import Updater
from failberry.modem import events as ev
from failberry.modem.part import Kept as ModemKept
from failberry.modem.part import ModemPart
from failberry.modem.part import build as build_modem
from failberry.modem.smsport import CNMI, DriverSmsProvider
from failberry.modem.state import ModemState
from failberry.parts import Recipe, Seams
from failberry.status import Status
from failberry.supervisor import Supervisor, Timing

MODEM = '[modem]\napn = "internet"\ndevice = "/dev/ttyUSB2"\n'


class _Driver:
    """The driver as the modem part sees it: runs until cancelled, takes posted events."""

    poll_interval = 5.0
    at_timeout = 1.0

    def __init__(self) -> None:
        self.state = ModemState()
        self.posted: list[object] = []

    async def run(self) -> None:
        await asyncio.Event().wait()

    def post(self, event: object) -> None:
        self.posted.append(event)


class _NoDevices:
    async def events(self) -> AsyncIterator[ev.DeviceAdded]:
        await asyncio.Event().wait()
        yield ev.DeviceAdded("never")  # pragma: no cover


def test_the_modem_part_subscribes_for_the_length_of_its_run() -> None:
    async def go() -> tuple[int, int, list[object]]:
        bus, driver = Bus(), _Driver()
        part = ModemPart(driver, _NoDevices(), bus)  # type: ignore[arg-type]
        for _ in range(2):  # run twice: still one queue while running, none after
            task = asyncio.create_task(part.run())
            await asyncio.sleep(0.01)
            running = bus.subscribers(UplinkHealth)
            bus.publish(UplinkHealth("mobile", False, "3/3 targets lost"))
            await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return running, bus.subscribers(UplinkHealth), driver.posted

    running, after, posted = asyncio.run(go())
    assert (running, after) == (1, 0)
    assert posted == [ev.TrafficFailed("3/3 targets lost")] * 2


def test_a_fresh_modem_part_keeps_reboots_and_the_pin_outcome(tmp_path: Path) -> None:
    cfg = config.parse(MODEM + f'[paths]\nstate_dir = "{tmp_path}"\nrun_dir = "{tmp_path}"\n')
    first = build_modem(cfg, Seams(Status(), Bus()))
    first.driver.state = ModemState(reboots=(100.0, 200.0), pin_rejected=True, pin_unsure=1)
    kept = first.handover()
    assert kept == ModemKept((100.0, 200.0), True, 1)
    fresh = build_modem(cfg, Seams(Status(), Bus(), kept))
    assert fresh.driver is not first.driver
    st = fresh.driver.state
    assert (st.reboots, st.pin_rejected, st.pin_unsure) == ((100.0, 200.0), True, 1)
    assert st.phase == ModemState().phase  # the rest starts afresh


def test_the_sms_port_follows_the_modem_part_built_after_a_crash(tmp_path: Path) -> None:
    cfg = config.parse(MODEM + f'[paths]\nstate_dir = "{tmp_path}"\nrun_dir = "{tmp_path}"\n')
    port = DriverSmsProvider()
    assert asyncio.run(port.acquire()) is None  # no modem part yet: the SMS wait
    first = build_modem(cfg, Seams(Status(), Bus()), sms=port)
    fresh = build_modem(cfg, Seams(Status(), Bus(), first.handover()), sms=port)
    assert port.driver is fresh.driver
    assert fresh.driver.session.extra_setup == [CNMI] and fresh.driver.urc_listeners
    urcs: list[str] = []
    port.on_urc(urcs.append)
    for listener in fresh.driver.urc_listeners:
        listener('+CMTI: "SM",3')
    assert urcs == ['+CMTI: "SM",3']


def test_a_fresh_dyndns_part_keeps_its_records_and_what_it_told() -> None:
    def part(kept: object = None) -> DyndnsPart:
        updater = Updater(Nobody(), Nobody(),  # type: ignore[arg-type]
                          [Record("pi.example.org", "A", 60)])
        return DyndnsPart(updater, Status(), Bus(), provider="test",
                          kept=kept)  # type: ignore[arg-type]

    first = part()
    st = first.updater.states["A"]
    st.desired, st.sent, st.failures, st.blocked = "203.0.113.7", None, 3, "badauth"
    st.in_flight = True
    first.chooser.active = "mobile"
    first._changed()  # publishes the block once
    fresh = part(first.handover())
    got = fresh.updater.states["A"]
    assert (got.desired, got.failures, got.blocked, got.in_flight) == \
        ("203.0.113.7", 3, "badauth", False)
    assert got is not st  # a copy: nothing shared with the crashed object
    assert fresh.chooser.active == "mobile"
    assert fresh._blocked == {"pi.example.org A"}  # not published again


def test_a_fresh_network_part_keeps_following_the_modems_interface() -> None:
    from failberry.net.part import Kept, build

    cfg = config.parse(MODEM + '[lan]\ninterface = "eth0"\naddress = "192.168.50.1/24"\n'
                       '[uplink.mobile]\ninterface = "auto"\n'
                       'probe_targets = ["icmp:192.0.2.1"]\n')
    parts = [build(cfg, Seams(Status(), Bus(), kept)) for kept in (None, Kept("wwan0"))]
    try:
        assert parts[0].handover() == Kept(None)
        assert parts[1].cfg.uplink.mobile.interface == "wwan0"
        assert parts[1].uplinks["mobile"].spec.interface == "wwan0"
        assert parts[1].handover() == Kept("wwan0")
        fixed = config.parse(MODEM)  # a configured interface is never replaced
        other = build(fixed, Seams(Status(), Bus(), Kept("wwan0")))
        parts.append(other)
        assert other.cfg.uplink.mobile.interface == fixed.uplink.mobile.interface
    finally:
        for p in parts:
            assert p.s.close is not None
            p.s.close()


class _Listener:
    """Subscribes when built; the first object crashes at once, the next reads its queue."""

    name = "listener"
    deadline = 30.0

    def __init__(self, seams: Seams, heard: list[str], crash: bool) -> None:
        self.heard = heard
        self.crash = crash
        self.queue = seams.bus.subscribe(DyndnsBlocked)

    async def run(self) -> None:
        if self.crash:
            raise RuntimeError("boom")
        while True:
            self.heard.append((await self.queue.get()).record)


@pytest.mark.timeout(30)
def test_events_published_while_a_part_restarts_reach_the_fresh_object(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(f'[modem]\napn = "internet"\n[paths]\nrun_dir = "{tmp_path}"\n'
                    f'state_dir = "{tmp_path}"\n')
    heard: list[str] = []
    built: list[int] = []

    def build(seams: Seams) -> _Listener:
        built.append(1)
        return _Listener(seams, heard, crash=len(built) == 1)

    async def until(cond: Callable[[], bool]) -> None:
        end = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < end, "condition not reached"
            await asyncio.sleep(0.01)

    async def scenario() -> tuple[int, int]:
        sup = Supervisor(config.load(path), port=0, host="127.0.0.1",
                         parts=lambda c, s, b: [Recipe("listener", build)],
                         timing=Timing(restart_initial=0.3))
        task = asyncio.create_task(sup.run())
        await until(lambda: sup.restarts.get("listener") == 1)
        assert len(built) == 1  # crashed; the fresh one comes after the backoff
        sup.bus.publish(DyndnsBlocked("during the backoff", "x"))
        await until(lambda: len(built) == 2 and bool(heard))
        sup.bus.publish(DyndnsBlocked("later", "x"))
        await until(lambda: len(heard) == 2)
        running = sup.bus.subscribers(DyndnsBlocked)
        sup.request_stop("test")
        await task
        return running, sup.bus.subscribers(DyndnsBlocked)

    assert asyncio.run(scenario()) == (1, 0)
    assert heard == ["during the backoff", "later"]


class _Steady:
    name = "steady"
    deadline = 30.0

    def __init__(self, status: Status) -> None:
        self.status = status

    async def run(self) -> None:
        while True:
            self.status.report(self.name, "running")
            await asyncio.sleep(0.02)


@pytest.mark.timeout(30)
def test_a_part_whose_first_build_fails_is_built_after_the_backoff(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "f.toml"
    path.write_text(f'[modem]\napn = "internet"\n[paths]\nrun_dir = "{tmp_path}"\n'
                    f'state_dir = "{tmp_path}"\n')
    tries: list[int] = []

    def build(seams: Seams) -> _Steady:
        tries.append(1)
        if len(tries) == 1:
            raise OSError("no netlink socket yet")
        return _Steady(seams.status)

    async def scenario() -> tuple[str, int]:
        sup = Supervisor(config.load(path), port=0, host="127.0.0.1",
                         parts=lambda c, s, b: [Recipe("steady", build)],
                         timing=Timing(restart_initial=0.05))
        task = asyncio.create_task(sup.run())
        end = time.monotonic() + 10
        while sup.status.parts.get("steady") is None or \
                sup.status.parts["steady"].state != "running":
            assert time.monotonic() < end
            await asyncio.sleep(0.01)
        state, restarts = sup.status.parts["steady"].state, sup.restarts["steady"]
        sup.request_stop("test")
        await task
        return state, restarts

    with caplog.at_level("INFO", logger="failberry.supervisor"):
        assert asyncio.run(scenario()) == ("running", 1)
    assert "part steady could not be built: OSError: no netlink socket yet; restarting it in " \
        "0.05s (restart 1)" in [r.getMessage() for r in caplog.records]
