"""SMS through the modem part's own AT port (issue 17 wired to issue 5): the fake ZTE stick
on ptys, the real driver, the stand-in pppd holding the data port in a namespace of the test,
and the alerts part with the driver's `DriverSmsProvider`. Also `AtChannel.submit` waiting
for the `> ` prompt, and the data port brought back to command mode when failberry stops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from alerts_fakes.sms_modem import FakeSmsModem
from failberry import config
from failberry.alerts.at_session import ChannelSession
from failberry.alerts.build import build
from failberry.bus import ActiveUplinkChanged
from failberry.modem.at import AtChannel, open_serial
from failberry.modem.errors import AtTimeout, CmsError
from failberry.modem.machine import Phase
from failberry.modem.smsport import CNMI, DriverSmsProvider
from failberry.parts import Seams
from modem_fakes.rig import Rig

ADMIN = "+491701234567"
STRANGER = "+15550001111"


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def alerts_cfg(tmp: Path) -> config.Config:
    return config.parse(f'[modem]\napn = "internet"\n[paths]\nstate_dir = "{tmp}/state"\n'
                        f'[alerts]\nsms_to = ["{ADMIN}"]\nsms_commands_from = ["{ADMIN}"]\n'
                        f'hooks_dir = "{tmp}/hooks"\n')


def sent(rig: Rig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = rig.ctl(op="get")["sms_sent"]
    return out


async def start(rig: Rig) -> DriverSmsProvider:
    """The provider first (its AT+CNMI joins the driver's setup), then the part."""
    provider = DriverSmsProvider(rig.driver)
    rig.task = asyncio.create_task(rig.part.run())
    await rig.wait_phase(Phase.CONNECTED)
    assert rig.ppp0_address() == "10.64.64.64"  # pppd holds the data port
    return provider


# -- AtChannel.submit: the body goes after the prompt


def test_submit_waits_for_the_prompt_on_a_stick_that_flushes_typeahead(tmp_path: Path) -> None:
    fake = FakeSmsModem(tmp_path, flush_typeahead=True)

    async def go() -> None:
        channel = AtChannel(open_serial(str(fake.path)), "ttyUSB1", lambda _line: None)
        channel.start()
        try:
            await channel.command("ATE0")
            await channel.command("AT+CMGF=1")
            lines = await ChannelSession(channel).submit(f'AT+CMGS="{ADMIN}"', "failover",
                                                         5.0)
            assert lines == ["+CMGS: 1"]  # the prompt is not taken for an answer line
            fake.cms_error = 500
            with pytest.raises(CmsError) as err:
                await channel.submit(f'AT+CMGS="{ADMIN}"', "again", 5.0)
            assert err.value.code == 500
            assert await channel.command("AT") == []  # still in step
        finally:
            channel.close()

    try:
        run(go())
        assert [(s.to, s.body) for s in fake.sent] == [(ADMIN, "failover")]
        assert fake.lost_typeahead == 0
    finally:
        fake.close()


def test_submit_without_a_prompt_times_out_and_leaves_with_esc(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    from failberry.modem import at as at_mod

    monkeypatch.setattr(at_mod, "PROMPT_TIMEOUT", 0.3)
    fake = FakeSmsModem(tmp_path)

    async def go() -> None:
        channel = AtChannel(open_serial(str(fake.path)), "ttyUSB1", lambda _line: None)
        channel.start()
        try:
            await channel.command("ATE0")
            # AT+CSCS answers OK at once, without a prompt: taken as the (early) result
            assert await channel.submit('AT+CSCS="IRA"', "x", 2.0) == []
            fake._cmgs = None
            fake.echo = False
            # a command the fake swallows: no prompt, no answer
            orig = fake._command
            fake._command = fake.log.append  # type: ignore[method-assign]
            with pytest.raises(AtTimeout, match="no prompt"):
                await channel.submit("AT+CMGS=12", "00", 2.0)
            fake._command = orig  # type: ignore[method-assign]
            assert channel.stale
            assert await channel.command("AT") == []  # resynchronised
        finally:
            channel.close()

    try:
        run(go())
        assert fake.sent == []
    finally:
        fake.close()


# -- the acceptance, through the driver's monitoring port while pppd runs


@pytest.mark.root
@pytest.mark.timeout(90)
def test_failover_is_one_sms_via_the_monitoring_port_while_pppd_holds_data(
        tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, start_part=False) as rig:
            provider = await start(rig)
            part = build(alerts_cfg(tmp_path), Seams(rig.status, rig.bus), provider=provider,
                         tick=0.05)
            task = asyncio.create_task(part.run())
            try:
                rig.bus.publish(ActiveUplinkChanged("wired", None, "start"))
                await asyncio.sleep(0.3)
                t0 = time.monotonic()
                rig.bus.publish(ActiveUplinkChanged("mobile", "wired",
                                                    "wired: 3/3 targets lost"))
                while not sent(rig):
                    assert time.monotonic() - t0 < 5.0, rig.ctl(op="get")["log"][-20:]
                    await asyncio.sleep(0.05)
                took = time.monotonic() - t0
                await asyncio.sleep(1.0)  # and no second one
                got = rig.ctl(op="get")
                assert [(s["command"], s["body"]) for s in got["sms_sent"]] == [
                    (f'AT+CMGS="{ADMIN}"', "failover: wired -> mobile: wired: 3/3 targets lost")]
                assert got["lost_typeahead"] == 0  # the body went after the prompt
                assert took < 5.0
                # through the monitoring port while the data port stayed pppd's
                assert rig.driver.channel is not None
                assert rig.driver.channel.name == str(rig.dev / "ttyUSB1")
                assert rig.phase is Phase.CONNECTED and rig.ppp0_address() == "10.64.64.64"
                # the driver's setup, then the SMS code's first use of the channel
                assert got["log"].count(CNMI) == 2
                # the driver's polling went on around it, one command at a time
                polls = got["log"].count("AT+CSQ")
                await asyncio.sleep(1.2)
                assert rig.ctl(op="get")["log"].count("AT+CSQ") > polls
                print(f"failover to AT+CMGS: {took * 1000:.0f} ms")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    run(go())


@pytest.mark.root
@pytest.mark.timeout(90)
def test_status_sms_via_cmti_is_answered_and_a_stranger_ignored(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, start_part=False) as rig:
            provider = await start(rig)
            part = build(alerts_cfg(tmp_path), Seams(rig.status, rig.bus), provider=provider,
                         tick=0.05)
            task = asyncio.create_task(part.run())
            try:
                await asyncio.sleep(0.5)  # the inbox's first look at the store
                rig.ctl(op="sms", **{"from": STRANGER, "text": "status"})
                rig.ctl(op="sms", **{"from": ADMIN, "text": "status"})
                t0 = time.monotonic()
                while not sent(rig):
                    assert time.monotonic() - t0 < 5.0, rig.ctl(op="get")["log"][-20:]
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                got = rig.ctl(op="get")
                [answer] = got["sms_sent"]
                assert answer["to"] == ADMIN and answer["text"].startswith("failberry ")
                assert "modem connected" in answer["text"] or "connected" in answer["text"]
                assert got["sms_store"] == {} and sorted(got["sms_deleted"]) == [1, 2]
                assert "AT+CMGL=4" in got["log"]
                counts = rig.status.parts["alerts"].detail["sms_commands"]
                assert counts["status"] == 1 and counts["ignored"] == 1
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    run(go())


@pytest.mark.root
@pytest.mark.timeout(90)
def test_sms_waits_while_the_only_port_is_pppds(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, single_port=True, start_part=False) as rig:
            provider = await start(rig)
            assert await provider.acquire() is None  # pppd holds the one port: queue
            part = build(alerts_cfg(tmp_path), Seams(rig.status, rig.bus), provider=provider,
                         tick=0.05)
            task = asyncio.create_task(part.run())
            try:
                rig.bus.publish(ActiveUplinkChanged("wired", None, "start"))
                await asyncio.sleep(0.2)
                rig.bus.publish(ActiveUplinkChanged("mobile", "wired", "wired down"))
                await asyncio.sleep(1.0)
                assert sent(rig) == []
                detail = rig.status.parts["alerts"].detail
                assert detail["channels"][f"sms:{ADMIN}"]["queued"] >= 1, detail
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    run(go())


# -- stopping while pppd left the stick in data mode


@pytest.mark.root
@pytest.mark.timeout(90)
def test_stop_brings_the_data_port_back_to_command_mode(tmp_path: Path) -> None:
    """Given the time (a stick that ignores DTR, as a pty does, needs the `+++` escape with
    its two guard times), stopping leaves the data port answering AT."""
    async def go() -> None:
        async with Rig(tmp_path, {"data_mode": "strict"}) as rig:
            rig.driver.stop_budget = 6.0
            await rig.wait_phase(Phase.CONNECTED)
            assert rig.task is not None
            t0 = time.monotonic()
            rig.task.cancel()
            await asyncio.gather(rig.task, return_exceptions=True)
            took = time.monotonic() - t0
            got = rig.ctl(op="get")
            assert got["escapes"] == 1, got["log"][-10:]  # +++ between guard times
            assert list(rig.driver.hangups) == [True]
            assert took < 6.0 + 0.5
            # the next start's discovery finds the port answering
            channel = AtChannel(open_serial(str(rig.dev / "ttyUSB2")), "ttyUSB2",
                                lambda _line: None)
            channel.start()
            try:
                assert await channel.probe(1.0)
            finally:
                channel.close()
            print(f"stop with the stick in data mode, escaped: {took:.2f} s")

    run(go())


@pytest.mark.root
@pytest.mark.timeout(90)
def test_stop_in_data_mode_stays_within_the_supervisors_grace(tmp_path: Path) -> None:
    """The default budget: DTR, `AT` and `ATH` are tried (a pty has no DTR, so here the
    stick stays in data mode) and the part's cleanup ends within the 1.5 s grace."""
    async def go() -> None:
        async with Rig(tmp_path, {"data_mode": "strict"}) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            assert rig.task is not None
            before = rig.ctl(op="get")["ignored_in_data_mode"]
            t0 = time.monotonic()
            rig.task.cancel()
            await asyncio.gather(rig.task, return_exceptions=True)
            took = time.monotonic() - t0
            got = rig.ctl(op="get")
            assert got["ignored_in_data_mode"] > before  # the `AT` reached the port
            assert list(rig.driver.hangups) == [False]
            assert took < 1.5, took
            print(f"stop with the stick in data mode, default budget: {took:.2f} s")

    run(go())


def test_the_shared_port_caps_the_cmgs_wait() -> None:
    """A 60 s AT+CMGS on the driver's port would hold its polling past the part's deadline."""
    from failberry.modem import smsport

    class Channel:
        def __init__(self) -> None:
            self.timeouts: list[float] = []

        async def submit(self, command: str, body: str, timeout: float) -> list[str]:
            self.timeouts.append(timeout)
            return []

    channel = Channel()
    session = smsport.SharedSession(channel)  # type: ignore[arg-type]
    run(session.submit('AT+CMGS="+49"', "x", 60.0))
    run(session.submit('AT+CMGS="+49"', "x", 10.0))
    assert channel.timeouts == [smsport.SHARED_SEND_TIMEOUT, 10.0]
    assert smsport.SHARED_SEND_TIMEOUT + 5.0 < 60.0  # prompt wait included, under 60 s


def test_build_parts_hands_the_modem_parts_port_to_the_sms_code(tmp_path: Path) -> None:
    from failberry.alerts.at_session import SerialSmsProvider
    from failberry.alerts.part import AlertsPart
    from failberry.bus import Bus
    from failberry.modem.part import ModemPart
    from failberry.parts import build_first
    from failberry.status import Status

    def parts(extra: str) -> tuple[ModemPart, AlertsPart]:
        cfg = config.parse(f'[modem]\napn = "internet"\nat_port = "/dev/ttyUSB1"\n'
                           f'[paths]\nstate_dir = "{tmp_path}/state"\n'
                           f'run_dir = "{tmp_path}/run"\n'
                           f'[alerts]\nsms_to = ["{ADMIN}"]\nsms_commands_from = ["{ADMIN}"]\n'
                           f'hooks_dir = "{tmp_path}/hooks"\n{extra}')
        built = build_first(cfg, Status(), Bus(), manage_network=False)
        [m] = [p for p in built if isinstance(p, ModemPart)]
        [a] = [p for p in built if isinstance(p, AlertsPart)]
        return m, a

    modem, alerts = parts("")
    assert alerts.inbox is not None
    provider = alerts.inbox.sms.provider
    assert isinstance(provider, DriverSmsProvider) and provider.driver is modem.driver
    assert modem.driver.session.extra_setup == [CNMI]
    assert modem.driver.urc_listeners  # +CMTI reaches the inbox
    modem, alerts = parts('sms_port = "/dev/ttyUSB3"\n')  # a port of its own
    assert alerts.inbox is not None
    assert isinstance(alerts.inbox.sms.provider, SerialSmsProvider)
    assert modem.driver.session.extra_setup == [] and not modem.driver.urc_listeners
