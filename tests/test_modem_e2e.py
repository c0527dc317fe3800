"""End to end: the fake ZTE modem on ptys drives the real AT layer, state machine, driver and
the stand-in pppd (in a network namespace made here) from plugged-in to ppp0 up, and through
the faults sticks really have. Each fault test also bounds the process's CPU time: the
supervisor must wait, never spin."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from failberry.bus import UplinkHealth
from failberry.modem.machine import PPP_EXIT, Phase, PppOutcome
from failberry.modem.parsers import Signal, parse_csq, pick
from failberry.reports import ModemReport, parse
from failberry.status import jsonable
from modem_fakes.rig import CpuWatch, Rig

pytestmark = [pytest.mark.root]


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_plugged_in_to_ppp0_up(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            watch = CpuWatch()
            await rig.wait_phase(Phase.CONNECTED)
            assert rig.ppp0_address() == "10.64.64.64"
            assert [c.state for c in rig.history] == [
                "probing", "sim_check", "registering", "dialing", "connected"]
            last = rig.history[-1]
            assert (last.state, last.interface, last.address) == \
                ("connected", "ppp0", "10.64.64.64")
            await rig.wait_for(lambda: rig.status.parts["modem"].detail.get("signal_dbm"))
            detail = rig.status.parts["modem"].detail
            assert rig.status.parts["modem"].state == "connected"
            assert detail["signal_dbm"] == -79 and detail["operator"] == "Vodafone UK"
            assert detail["address"] == "10.64.64.64" and detail["registration"] == "home"
            assert detail["manufacturer"] == "ZTE CORPORATION"
            assert detail["ladder_counts"] == {"redial": 0, "modem_reset": 0,
                                               "usb_rebind": 0, "port_power": 0, "reboot": 0}
            # The driver's keys are exactly the shape the status readers accept.
            report = parse(ModemReport, json.loads(json.dumps(jsonable(detail))))
            assert report.access_tech and report.port
            got = rig.ctl(op="get")
            assert got["zcdrun"] == 1  # the CD-ROM is switched off once
            assert "ATE0" in got["log"] and "AT+CREG=2" in got["log"]
            watch.assert_low()
            # the fake's data port was dialed with the APN from config
            assert 'AT+CGDCONT=1,"IP","internet"' in got["log"] and "ATD*99#" in got["log"]

    run(go())


@pytest.mark.timeout(60)
def test_pin_required_is_entered_once(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, {"sim": "pin", "pin": "2468"}, pin="2468") as rig:
            await rig.wait_phase(Phase.CONNECTED)
            got = rig.ctl(op="get")
            assert got["pin_attempts"] == 1
            assert "AT+CPIN=<pin>" in got["log"]
            assert rig.ppp0_address() == "10.64.64.64"

    run(go())


@pytest.mark.timeout(60)
def test_wrong_pin_is_not_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def go() -> None:
        async with Rig(tmp_path, {"sim": "pin", "pin": "2468"}, pin="1111") as rig:
            await rig.wait_phase(Phase.SIM_FAILED)
            watch = CpuWatch()
            await asyncio.sleep(3)  # rechecked every 0.2 s meanwhile, PIN never resent
            assert rig.phase in (Phase.SIM_FAILED, Phase.SIM_CHECK)
            assert rig.ctl(op="get")["pin_attempts"] == 1
            rejected = [c.reason for c in rig.history if "PIN rejected" in c.reason]
            assert rejected and "+CME ERROR 16" in rejected[0]
            assert "rejected before" in (rig.driver.state.last_error or "")
            assert rig.ppp0() is None
            watch.assert_low()
    run(go())
    assert "1111" not in caplog.text  # the PIN never reaches a log


@pytest.mark.timeout(60)
def test_sim_missing(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, {"sim": "missing"}) as rig:
            await rig.wait_phase(Phase.SIM_FAILED)
            watch = CpuWatch()
            await asyncio.sleep(3)
            assert rig.phase in (Phase.SIM_FAILED, Phase.SIM_CHECK)  # rechecked, no rungs
            assert sum(rig.driver.state.ladder_counts.values()) == 0
            assert rig.driver.state.last_error == "SIM not inserted"
            assert rig.status.parts["modem"].detail["sim"] == "NOT INSERTED"
            watch.assert_low()

    run(go())


@pytest.mark.timeout(60)
def test_no_registration_climbs_then_connects_when_the_network_comes(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, {"reg": 2}) as rig:
            watch = CpuWatch()
            await rig.wait_for(lambda: rig.driver.state.ladder_counts["redial"] >= 1)
            assert "not registered after 2s" in (rig.driver.state.last_error or "")
            assert rig.ppp0() is None
            watch.assert_low()
            rig.ctl(op="set", key="reg", value=1)  # the network turns up
            await rig.wait_phase(Phase.CONNECTED, timeout=30)
            assert rig.ppp0_address() == "10.64.64.64"

    run(go())


@pytest.mark.timeout(60)
def test_registration_denied_waits_without_climbing(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, {"reg": 3}) as rig:
            await rig.wait_phase(Phase.DENIED)
            watch = CpuWatch()
            await asyncio.sleep(4)  # twice the registration timeout
            assert rig.phase is Phase.DENIED
            assert sum(rig.driver.state.ladder_counts.values()) == 0
            assert rig.ctl(op="get")["cfun_reset"] == 0
            watch.assert_low()

    run(go())


@pytest.mark.timeout(60)
def test_cme_error_replies_are_typed_and_survived(tmp_path: Path) -> None:
    async def go() -> None:
        cme = {"AT+COPS?": 30, "AT+CGMM": 100, "AT+CMEE=1": 4, "AT+CGREG?": 4}
        async with Rig(tmp_path, {"cme": cme}, poll_interval=0.3) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            await rig.wait_for(lambda: "+CME ERROR 30" in str(
                rig.status.parts["modem"].detail.get("last_error")))
            detail = rig.status.parts["modem"].detail
            assert "no network service" in detail["last_error"]
            assert detail.get("operator") is None and detail["model"] == ""
            await asyncio.sleep(1.5)  # a few polls, all of them while connected
            log = rig.ctl(op="get")["log"]
            assert log.count("AT+COPS?") >= 4  # a network error is asked about again...
            # ...a command the stick does not know is learned once and never sent again
            assert log.count("AT+CEREG?") == 1 and log.count("AT+CGREG?") == 1
            assert log.count("AT+CMEE=1") == 1
            assert "CEREG" not in str(rig.status.parts["modem"].detail.get("last_error"))

    run(go())


@pytest.mark.timeout(90)
def test_urc_storm_and_garbage_while_commands_complete(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            channel = rig.driver.channel
            assert channel is not None
            urcs0 = channel.urcs
            watch = CpuWatch()
            rig.ctl(op="storm", rate=1000, seconds=10)
            replies = 0
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while loop.time() < end:
                rig.ctl(op="garbage", hex="00ff fe0d 0a0d 2b43 5351 3a00".replace(" ", ""))
                lines = await channel.command("AT+CSQ", timeout=2)
                # a torn "+CSQ:" from the garbage may sit beside the answer; never a URC
                assert pick(lines, "+CSQ", parse_csq) == Signal(17, 99, -79), lines
                assert not any(ln.startswith(("+CREG", "^MODE", "+ZPAS", "RING", "+CGREG",
                                              "^DSFLOW")) for ln in lines), lines
                replies += 1
                await asyncio.sleep(0.05)
            cpu, wall = watch.used()
            await asyncio.sleep(0.3)
            assert channel.urcs - urcs0 >= 9000
            assert replies >= 50
            assert rig.phase is Phase.CONNECTED
            assert cpu < 0.5 * wall, f"{cpu:.2f}s CPU over {wall:.1f}s of storm"

    run(go())


@pytest.mark.timeout(90)
def test_silent_modem_climbs_to_cfun_then_usb_power(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            watch = CpuWatch()
            rig.ctl(op="set", key="silent", value=True)
            rig.ctl(op="hangup")  # NO CARRIER on the data port: pppd exits 16
            await rig.wait_phase(Phase.REBOOTING, timeout=60)
            log = rig.ctl(op="get")["log"]
            assert "AT+CFUN=1,1" in log  # the modem-reset rung was tried
            unbind = rig.sysroot / "bus" / "usb" / "drivers" / "usb" / "unbind"
            assert unbind.read_text() == "1-1.2"
            packets = [t.setup_packet() for t in rig.backend.transfers
                       if t.bmRequestType == 0x23]
            assert packets == [bytes([0x23, 0x01, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00]),
                               bytes([0x23, 0x03, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00])]
            assert len(rig.recorder.reasons) == 1
            assert rig.driver.state.ladder_counts == {
                "redial": 1, "modem_reset": 1, "usb_rebind": 1, "port_power": 1, "reboot": 1}
            states = [c.state for c in rig.history]
            assert states.index("resetting") < len(states) - 1
            assert '"1-1.2"' not in str(packets)
            assert (rig.tmp / "reboots.json").read_text().startswith("[")
            watch.assert_low()

    run(go())


@pytest.mark.timeout(90)
def test_port_disappears_and_returns(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            rig.ctl(op="unplug")
            await rig.wait_phase(Phase.ABSENT)
            await rig.wait_for(lambda: rig.ppp0() is None)
            await rig.wait_for(lambda: not rig.driver.ppp.running)
            watch = CpuWatch()
            await asyncio.sleep(1.5)
            assert rig.phase is Phase.ABSENT
            watch.assert_low()
            rig.ctl(op="replug")
            await rig.wait_phase(Phase.CONNECTED)
            assert rig.ppp0_address() == "10.64.64.64"
            assert rig.ctl(op="get")["zcdrun"] == 1  # still once per stick

    run(go())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", sorted(PPP_EXIT))
def test_pppd_exit_status(tmp_path: Path, status: int) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            watch = CpuWatch()
            rig.order_pppd_exit(status)
            outcome = PPP_EXIT[status][1]
            want = f"pppd exited {status}"
            if outcome is PppOutcome.REDIAL:  # idle/connect-time: dial again, no fault
                await rig.wait_for(lambda: any(c.state == "dialing" and want in c.reason
                                               for c in rig.history))
                await rig.wait_phase(Phase.CONNECTED)
                assert sum(rig.driver.state.ladder_counts.values()) == 0
            elif outcome is PppOutcome.FATAL:  # our setup is wrong: no redial loop
                await rig.wait_phase(Phase.FAILED)
                assert want in (rig.driver.state.last_error or "")
                await asyncio.sleep(1)
                assert rig.phase is Phase.FAILED
            elif outcome is PppOutcome.AUTH:  # credentials: retried after backoff_max only
                await rig.wait_for(lambda: any(c.state == "failed" for c in rig.history))
                assert want in (rig.driver.state.last_error or "")
                await rig.wait_phase(Phase.CONNECTED)
                assert sum(rig.driver.state.ladder_counts.values()) == 0  # no hardware rungs
            else:
                await rig.wait_for(lambda: rig.driver.state.ladder_counts["redial"] == 1)
                assert want in (rig.driver.state.last_error or "")
                await rig.wait_phase(Phase.CONNECTED)
            await rig.wait_for(lambda: (rig.ppp0_address() is not None)
                               == (rig.phase is Phase.CONNECTED))
            watch.assert_low()

    run(go())


@pytest.mark.timeout(60)
def test_no_traffic_from_the_probes_redials(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            rig.bus.publish(UplinkHealth("wired", False, "ignored: not ours"))
            rig.bus.publish(UplinkHealth("mobile", False, "3 of 3 probes lost"))
            await rig.wait_for(lambda: rig.driver.state.ladder_counts["redial"] == 1)
            assert "no traffic passes: 3 of 3 probes lost" in (
                rig.driver.state.last_error or "")
            assert "lost" in [c.state for c in rig.history]
            await rig.wait_phase(Phase.CONNECTED)
            assert rig.ppp0_address() == "10.64.64.64"

    run(go())
