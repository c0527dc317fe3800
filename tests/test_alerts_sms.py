"""SMS through a fake stick on a pty: text and PDU mode, UCS2, concatenated messages,
+CMS ERROR typed, commands read with AT+CMGL after +CMTI and deleted, the allowlist, and the
acceptance: a failover is one SMS within 5 s, a flapping link one per hold-down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts_fakes.sms_modem import FakeSmsModem, encode_deliver
from failberry import config
from failberry.alerts import inbox as inbox_mod
from failberry.alerts.at_session import SerialSmsProvider
from failberry.alerts.build import build
from failberry.alerts.sms import SmsModem, parse_deliver
from failberry.alerts.sms_pdu import gsm7_septets, pack_septets, submit_pdus
from failberry.bus import ActiveUplinkChanged, Bus, ForceUplink
from failberry.modem.at import open_serial
from failberry.modem.errors import CmsError
from failberry.parts import Seams
from failberry.status import Status

ADMIN = "+491701234567"
STRANGER = "+15550001111"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSmsModem]:
    m = FakeSmsModem(tmp_path)
    yield m
    m.close()


def cfg_for(fake: FakeSmsModem, tmp_path: Path, extra: str = "") -> config.Config:
    return config.parse(f'[modem]\napn = "internet"\n[paths]\nstate_dir = "{tmp_path}/state"\n'
                        f'[alerts]\nsms_to = ["{ADMIN}"]\nsms_commands_from = ["{ADMIN}"]\n'
                        f'sms_port = "/dev/fake"\nhooks_dir = "{tmp_path}/hooks"\n{extra}')


def provider(fake: FakeSmsModem) -> SerialSmsProvider:
    return SerialSmsProvider(str(fake.path), open_serial)


async def wait_for(cond: object, timeout: float) -> float:
    start = time.monotonic()
    while not cond():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


# -- encodings


def test_gsm7_packing_matches_the_spec_example() -> None:
    # The classic example from the GSM 03.38 literature: "hellohello".
    assert pack_septets(gsm7_septets("hellohello") or []).hex().upper() == "E8329BFD4697D9EC37"


def test_submit_pdu_single_gsm7() -> None:
    (pdu,) = submit_pdus("+46708251358", "hellohello", 1)
    assert pdu.hex == "0001000B916407281553F800000AE8329BFD4697D9EC37"
    assert pdu.length == len(bytes.fromhex(pdu.hex)) - 1


def test_long_text_is_concatenated_and_escapes_are_not_split() -> None:
    text = "x" * 152 + "[" + "y" * 50  # the escape pair straddles the 153-septet boundary
    pdus = submit_pdus(ADMIN, text, 9)
    assert len(pdus) == 2
    from alerts_fakes.sms_modem import decode_submit
    parts = [decode_submit(p.hex) for p in pdus]
    assert [c for _, _, c in parts] == [(9, 2, 1), (9, 2, 2)]
    assert parts[0][1] == "x" * 152 and "".join(t for _, t, _ in parts) == text


def test_ucs2_and_long_ucs2() -> None:
    (pdu,) = submit_pdus(ADMIN, "Grüße ✓", 1)
    from alerts_fakes.sms_modem import decode_submit
    assert decode_submit(pdu.hex)[:2] == (ADMIN, "Grüße ✓")
    long = "✓😀" * 50  # surrogate pairs must not be cut
    pdus = submit_pdus(ADMIN, long, 3)
    assert len(pdus) == 3
    assert "".join(decode_submit(p.hex)[1] for p in pdus) == long


def test_parse_deliver_numeric_alphanumeric_ucs2() -> None:
    assert parse_deliver(encode_deliver(ADMIN, "status")) == (ADMIN, "status")
    assert parse_deliver(encode_deliver("Vodafone", "hi")) == ("Vodafone", "hi")
    assert parse_deliver(encode_deliver(ADMIN, "Größe €")) == (ADMIN, "Größe €")


# -- over the pty


async def _text_mode_pdu_mode_and_cms_error(fake: FakeSmsModem) -> None:
    sms = SmsModem(provider(fake))
    await sms.send(ADMIN, "failover: wired -> mobile")
    await sms.send(ADMIN, "Temperatur 85 °C")  # not ASCII: PDU mode, UCS2
    await sms.send(ADMIN, "long " * 60)  # 300 characters: two parts
    assert [s.mode for s in fake.sent] == ["text", "pdu", "pdu", "pdu"]
    assert fake.sent[0].command == f'AT+CMGS="{ADMIN}"'
    assert fake.messages() == [(ADMIN, "failover: wired -> mobile"), (ADMIN, "Temperatur 85 °C"),
                               (ADMIN, "long " * 60)]
    assert fake.lost_typeahead == 0  # every body waited for the prompt
    fake.cms_error = 331
    with pytest.raises(CmsError) as info:
        await sms.send(ADMIN, "no network")
    assert info.value.code == 331 and "no network service" in str(info.value)
    await provider_close(sms)


async def provider_close(sms: SmsModem) -> None:
    p = sms.provider
    assert isinstance(p, SerialSmsProvider)
    p.close()


# -- the part, end to end


async def _failover_is_one_sms_within_5s_and_flapping_one_per_hold_down(
        fake: FakeSmsModem, tmp_path: Path) -> None:
    cfg = cfg_for(fake, tmp_path, 'hold_down = "3s"\n')
    bus, status = Bus(), Status()
    part = build(cfg, Seams(status, bus), provider=provider(fake), tick=0.05)
    task = asyncio.create_task(part.run())
    try:
        bus.publish(ActiveUplinkChanged("wired", None, "start"))  # the first choice: no news
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        bus.publish(ActiveUplinkChanged("mobile", "wired", "wired: 3/3 targets lost"))
        took = await wait_for(lambda: len(fake.sent) >= 1, 5.0)
        await asyncio.sleep(0.5)
        assert len(fake.sent) == 1, fake.sent
        assert fake.sent[0].command == f'AT+CMGS="{ADMIN}"'
        assert fake.sent[0].body == "failover: wired -> mobile: wired: 3/3 targets lost"
        assert took < 5.0
        # Ten switches within about a second, while the hold-down of the first runs.
        for i in range(10):
            up, prev = ("wired", "mobile") if i % 2 == 0 else ("mobile", "wired")
            bus.publish(ActiveUplinkChanged(up, prev, f"flap {i}"))
            await asyncio.sleep(0.1)
        assert len(fake.sent) == 1  # still inside the hold-down
        await wait_for(lambda: len(fake.sent) >= 2, 5.0)
        await asyncio.sleep(0.5)
        assert len(fake.sent) == 2
        gap = fake.sent[1].at - fake.sent[0].at
        assert gap >= 3.0 - 0.1, gap
        assert fake.sent[1].body.startswith("failover: wired -> mobile: flap 9 (9 more since")
        assert fake.sent[0].at - t0 < 5.0
        snap = status.parts["alerts"].detail
        assert snap["channels"][f"sms:{ADMIN}"]["sent"] == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _commands_from_the_allowlist_only(fake: FakeSmsModem, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox_mod, "REBOOT_DELAY", 0.05)
    cfg = cfg_for(fake, tmp_path, 'sms_force_for = "10m"\n')
    bus, status = Bus(), Status()
    forced = bus.subscribe(ForceUplink)
    reboots: list[str] = []
    part = build(cfg, Seams(status, bus), provider=provider(fake), reboot=reboots.append,
                 tick=0.05)
    task = asyncio.create_task(part.run())
    try:
        await asyncio.sleep(0.3)
        fake.deliver(STRANGER, "reboot")
        fake.deliver(STRANGER, "status")
        fake.deliver("Vodafone", "failover")
        await wait_for(lambda: len(fake.deleted) == 3, 5.0)
        await asyncio.sleep(0.3)
        assert fake.sent == [] and reboots == [] and forced.empty()
        fake.deliver(ADMIN, "  Status ")
        await wait_for(lambda: len(fake.sent) == 1, 5.0)
        assert fake.sent[0].to == ADMIN and fake.sent[0].text.startswith("failberry ")
        fake.deliver(ADMIN, "failover 15")
        ev = await asyncio.wait_for(forced.get(), 5.0)
        assert ev == ForceUplink("mobile", 900.0, f"SMS failover from {ADMIN}")
        fake.deliver(ADMIN, "failback")
        ev = await asyncio.wait_for(forced.get(), 5.0)
        assert ev.uplink == "wired" and ev.seconds == 600.0
        fake.deliver(ADMIN, "format c:")  # not a command: ignored
        fake.deliver(ADMIN, "reboot")
        await wait_for(lambda: reboots != [], 5.0)
        assert reboots == [f"SMS command from {ADMIN}"]
        assert any("rebooting" in s.text for s in fake.sent)
        assert fake.store == {}  # every message deleted after reading
        counts = status.parts["alerts"].detail["sms_commands"]
        assert counts["ignored"] == 4 and counts["status"] == 1 and counts["reboot"] == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _sms_waits_in_the_queue_across_a_restart(fake: FakeSmsModem,
                                                       tmp_path: Path) -> None:
    """No port: the SMS is queued in the state file (0600); a new part sends it."""
    cfg = cfg_for(fake, tmp_path, 'retry_initial = "100ms"\nretry_max = "200ms"\n')
    bus = Bus()
    absent = SerialSmsProvider(str(tmp_path / "ttyGONE"), open_serial)
    part = build(cfg, Seams(Status(), bus), provider=absent, tick=0.05)
    task = asyncio.create_task(part.run())
    bus.publish(ActiveUplinkChanged("wired", None, "start"))
    bus.publish(ActiveUplinkChanged(None, "wired", "everything down"))
    state = tmp_path / "state" / "alerts.json"
    await wait_for(lambda: part.outboxes[f"sms:{ADMIN}"].counts.failed >= 2, 5.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert state.stat().st_mode & 0o777 == 0o600
    assert "no uplink works" in state.read_text()
    part2 = build(cfg, Seams(Status(), Bus()), provider=provider(fake), tick=0.05)
    task2 = asyncio.create_task(part2.run())
    try:
        await wait_for(lambda: len(fake.sent) == 1, 5.0)
        assert fake.sent[0].text.startswith("no uplink works")
    finally:
        task2.cancel()
        await asyncio.gather(task2, return_exceptions=True)


def test_text_mode_pdu_mode_and_cms_error(fake: FakeSmsModem) -> None:
    asyncio.run(_text_mode_pdu_mode_and_cms_error(fake))


def test_failover_is_one_sms_within_5s_and_flapping_one_per_hold_down(
        fake: FakeSmsModem, tmp_path: Path) -> None:
    asyncio.run(_failover_is_one_sms_within_5s_and_flapping_one_per_hold_down(fake, tmp_path))


def test_commands_from_the_allowlist_only(fake: FakeSmsModem, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_commands_from_the_allowlist_only(fake, tmp_path, monkeypatch))


def test_sms_waits_in_the_queue_across_a_restart(fake: FakeSmsModem,
                                                       tmp_path: Path) -> None:
    asyncio.run(_sms_waits_in_the_queue_across_a_restart(fake, tmp_path))


def test_two_callers_share_one_opened_port(fake: FakeSmsModem) -> None:
    async def scenario() -> None:
        p = provider(fake)
        a, b = await asyncio.gather(p.acquire(), p.acquire())
        assert a is not None and a is b
        assert await a.command("AT") == []
        p.close()

    asyncio.run(scenario())
    assert fake.log.count("ATE0") == 1


def test_channel_session_over_the_modem_parts_at_channel(tmp_path: Path) -> None:
    """The seam the lead wires: the modem part's own AtChannel carries the SMS (a stick that
    buffers a body typed ahead of the prompt; the channel waits for the prompt anyway)."""
    from failberry.alerts.at_session import ChannelSession
    from failberry.modem.at import AtChannel

    fake = FakeSmsModem(tmp_path, flush_typeahead=False)

    class Shared:
        def __init__(self) -> None:
            self.urcs: list[str] = []
            self.channel = AtChannel(open_serial(str(fake.path)), "ttyUSB1", self.urcs.append)

        async def acquire(self) -> ChannelSession:
            return ChannelSession(self.channel)

        def on_urc(self, callback: object) -> None:
            pass

    async def scenario() -> None:
        shared = Shared()
        shared.channel.start()
        await shared.channel.command("ATE0")
        sms = SmsModem(shared)
        await sms.send(ADMIN, "failover: wired -> mobile")
        await sms.send(ADMIN, "85 °C")
        fake.deliver(ADMIN, "status")
        await asyncio.sleep(0.1)
        [msg] = await sms.receive()
        assert (msg.sender, msg.text) == (ADMIN, "status")
        assert shared.urcs == ['+CMTI: "SM",1']
        shared.channel.close()

    try:
        asyncio.run(scenario())
        assert fake.messages() == [(ADMIN, "failover: wired -> mobile"), (ADMIN, "85 °C")]
        assert fake.store == {}
    finally:
        fake.close()
