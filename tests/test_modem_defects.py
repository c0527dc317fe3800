"""The field defects of issue 13, each against the fake ZTE stick with the behaviour that
wedged it: the real AT layer, machine, driver and stand-in pppd, as in test_modem_e2e."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from failberry import statuscmd
from failberry.config import RecoveryConfig
from failberry.modem.adapters import CommandReboot
from failberry.modem.at import SerialPort, open_serial
from failberry.modem.ladder import Rung
from failberry.modem.machine import Phase
from failberry.reports import ModemReport, parse
from modem_fakes.rig import FAST, CpuWatch, Rig

pytestmark = [pytest.mark.root]

# Only the last rung: every fault goes straight to the reboot command.
REBOOT_ONLY = RecoveryConfig(registration_timeout=1.0, redial_limit=0, modem_reset_limit=0,
                             usb_rebind_limit=0, port_power_limit=0, reboots_per_day=1,
                             backoff_initial=0.05, backoff_max=0.2, stable_after=600.0)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def reasons(rig: Rig) -> list[str]:
    return [c.reason for c in rig.history]


# -- 1. a registration URC in the read reply's shape, `+CREG: <n>,<stat>,...`


@pytest.mark.timeout(60)
def test_registration_urc_with_n_dials_at_once(tmp_path: Path) -> None:
    async def go() -> None:
        # A cold stick: searching at first, registered 0.5 s later, announced by a URC that
        # carries <n>. The poll is far away, so only reading the URC right can dial.
        scenario = {"reg": 2, "urc_n": True, "register_after": 0.5}
        patient = replace(FAST, registration_timeout=60.0)  # no redial comes to the rescue
        async with Rig(tmp_path, scenario, poll_interval=60.0, recovery=patient) as rig:
            await rig.wait_phase(Phase.CONNECTED, timeout=8)
            assert rig.ppp0_address() == "10.64.64.64"
            assert sum(rig.driver.state.ladder_counts.values()) == 0
            assert any("registered (home, +CREG)" in r for r in reasons(rig))

    run(go())


# -- 2. pppd leaves the stick in data mode


@pytest.mark.timeout(90)
@pytest.mark.parametrize("single_port", [False, True], ids=["two-ports", "one-port"])
def test_stick_left_in_data_mode_is_escaped_not_reset(tmp_path: Path,
                                                      single_port: bool) -> None:
    async def go() -> None:
        async with Rig(tmp_path, {"data_mode": "strict"}, single_port=single_port) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            rig.order_pppd_exit(15)  # the peer stopped answering echoes; the stick stays in
            await rig.wait_for(lambda: rig.phase is not Phase.CONNECTED)  # data mode
            await rig.wait_phase(Phase.CONNECTED, timeout=30)
            got = rig.ctl(op="get")
            assert got["escapes"] == 1  # +++ between guard times brought it back
            assert got["cfun_reset"] == 0 and not rig.recorder.reasons
            assert rig.driver.state.ladder_counts["modem_reset"] == 0
            assert list(rig.driver.hangups) == [True]
            assert "ATH" in got["log"]
            assert rig.ppp0_address() == "10.64.64.64"

    run(go())


# -- 3. the reboot rung: a child of the loop, its failure a fault like any other


@pytest.mark.timeout(60)
def test_failed_reboot_command_goes_on(tmp_path: Path) -> None:
    async def go() -> None:
        reboot = CommandReboot(["sh", "-c", "echo no such target >&2; exit 3"])
        async with Rig(tmp_path, {"reg": 2}, recovery=REBOOT_ONLY, rebooter=reboot) as rig:
            await rig.wait_for(lambda: any("reboot failed" in r for r in reasons(rig)))
            failed = next(r for r in reasons(rig) if "reboot failed" in r)
            assert "exited with status 3: no such target" in failed
            assert rig.phase is not Phase.REBOOTING
            watch = CpuWatch()
            rig.ctl(op="set", key="reg", value=1)  # nothing left to climb, but it looks again
            await rig.wait_phase(Phase.CONNECTED)
            assert len(rig.driver.state.reboots) == 1  # it counts toward reboots_per_day
            watch.assert_low()
            # /status shows the budget spent: the board stays up, no second reboot today.
            rig.driver.report()
            modem = rig.status.parts["modem"].detail
            assert (modem["reboots_last_day"], modem["reboots_per_day"]) == (1, 1)
            assert modem["reboot_budget_spent"] is True

    run(go())


@pytest.mark.timeout(60)
def test_hanging_reboot_command_is_bounded_and_does_not_block(tmp_path: Path) -> None:
    async def go() -> None:
        marker = tmp_path / "rebooting"
        reboot = CommandReboot(["sh", "-c", f"echo $$ > {marker}; exec sleep 20"], timeout=2.0)
        async with Rig(tmp_path, {"reg": 2}, recovery=REBOOT_ONLY, rebooter=reboot) as rig:
            await rig.wait_for(lambda: marker.exists() and marker.read_text().strip())
            assert rig.phase is Phase.REBOOTING
            # the loop keeps running while the command hangs (it was blocked for all of it)
            loop = asyncio.get_running_loop()
            lags = []
            for _ in range(20):
                t0 = loop.time()
                await asyncio.sleep(0.01)
                lags.append(loop.time() - t0)
            assert max(lags) < 0.5, lags
            assert rig.phase is Phase.REBOOTING
            await rig.wait_for(lambda: any("did not finish within 2s" in r
                                           for r in reasons(rig)), timeout=10)
            pid = int(marker.read_text())
            await rig.wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5)

    run(go())


# -- 4 and 5. SIM answers that are no reason to touch the hardware, and no reason to give up


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sim", ["error", "bare", "not_ready"])
def test_sim_problems_are_rechecked_without_hardware_rungs(tmp_path: Path, sim: str) -> None:
    async def go() -> None:
        opts = {"sim_retry": 0.1, "sim_retries": 3}
        async with Rig(tmp_path, {"sim": sim}, machine_opts=opts) as rig:
            # The phase moves between sim_failed and sim_check on every recheck (0.1 s here):
            # wait for the recorded transition, not a sample of the phase that can miss it.
            await rig.wait_for(lambda: any(c.state == Phase.SIM_FAILED.value
                                           for c in rig.history), timeout=30)
            watch = CpuWatch()
            await asyncio.sleep(2)
            assert rig.phase in (Phase.SIM_FAILED, Phase.SIM_CHECK)
            assert sum(rig.driver.state.ladder_counts.values()) == 0
            got = rig.ctl(op="get")
            assert got["cfun_reset"] == 0 and got["log"].count("AT+CPIN?") >= 5
            watch.assert_low()
            rig.ctl(op="set", key="sim", value="ready")  # the SIM comes good: it is used
            await rig.wait_phase(Phase.CONNECTED)

    run(go())


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("counter", "dropped"), [(False, 1), (True, 3)],
                         ids=["no-counter", "pin-counter"])
def test_pin_command_unanswered_is_not_a_rejection(tmp_path: Path, counter: bool,
                                                   dropped: int) -> None:
    async def go() -> None:
        # Without a PIN counter an unanswered PIN is sent again (at most twice in all); with
        # one that shows the SIM never counted it, as often as it goes unanswered.
        scenario = {"sim": "pin", "pin": "2468", "drop": {"AT+CPIN=": dropped},
                    "cpinr": counter}
        async with Rig(tmp_path, scenario, pin="2468") as rig:
            await rig.wait_phase(Phase.CONNECTED, timeout=60)
            got = rig.ctl(op="get")
            assert got["log"].count("AT+CPIN=<pin>") == dropped + 1  # dropped ones never
            assert got["pin_attempts"] == 1  # reached the SIM
            assert not rig.driver.state.pin_rejected and rig.driver.state.pin_unsure == 0
            assert any("PIN entry got no clear answer" in r for r in reasons(rig))

    run(go())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("counter", [True, False], ids=["pin-counter", "no-counter"])
def test_wrong_pin_answered_with_plain_error(tmp_path: Path, counter: bool) -> None:
    async def go() -> None:
        scenario = {"sim": "pin", "pin": "2468", "pin_plain_error": True, "cpinr": counter}
        async with Rig(tmp_path, scenario, pin="1111") as rig:
            await rig.wait_phase(Phase.SIM_FAILED)
            await asyncio.sleep(2)  # many rechecks
            got = rig.ctl(op="get")
            if counter:  # the PIN counter went down: a rejection, never sent again
                assert got["pin_attempts"] == 1 and rig.driver.state.pin_rejected
                assert any("PIN tries left went from 3 to 2" in r for r in reasons(rig))
            else:  # unknown: sent again, but never so often that the SIM wants its PUK
                assert got["pin_attempts"] == 2 and not rig.driver.state.pin_rejected

    run(go())


# -- 6. a modem reset with no port open is a failed rung, not a done one


@pytest.mark.timeout(90)
def test_reset_with_no_port_open_counts_as_failed(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            rig.ctl(op="unplug")  # and it stays away
            await rig.wait_phase(Phase.REBOOTING, timeout=60)
            assert any("modem_reset failed: no AT port open" in r for r in reasons(rig))
            assert rig.ctl(op="get")["cfun_reset"] == 0

    run(go())


# -- 8. a late reply is not the next command's answer


@pytest.mark.timeout(60)
def test_late_reply_is_drained_before_the_next_command(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, {"slow": {"AT+CGMI": 1.5}}, at_timeout=1.0) as rig:
            await rig.wait_phase(Phase.CONNECTED)
            detail = rig.status.parts["modem"].detail
            assert detail["model"] == "MF180"  # not "ZTE CORPORATION", CGMI's late answer
            assert sum(rig.driver.state.ladder_counts.values()) == 0  # slow is not silent

    run(go())


@pytest.mark.timeout(60)
def test_at_channel_resynchronises_after_a_timeout(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, {"slow": {"AT+CSQ": 1.5}}, start_part=False) as rig:
            from failberry.modem.at import AtChannel
            from failberry.modem.errors import AtTimeout

            channel = AtChannel(open_serial(str(rig.dev / "ttyUSB1")), "t", lambda _l: None)
            channel.start()
            try:
                await channel.command("ATE0")
                with pytest.raises(AtTimeout):
                    await channel.command("AT+CSQ", timeout=1.0)
                assert await channel.command("AT+COPS?") == ['+COPS: 0,0,"Vodafone UK",2']
                assert await channel.command("AT+CGMM") == ["MF180"]
                assert channel.resyncs == 1
            finally:
                channel.close()

    run(go())


# -- 9. a crash in a driver task is a fault now, not a two-minute silence


@pytest.mark.timeout(60)
def test_crash_in_a_driver_task_is_a_fault_at_once(tmp_path: Path) -> None:
    calls: list[str] = []

    def opener(path: str) -> SerialPort:
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("a bug in the port setup")
        return open_serial(path)

    async def go() -> None:
        async with Rig(tmp_path, opener=opener, step_timeout=60.0) as rig:
            t0 = time.monotonic()
            # The step timer (60 s) must not be what recovers it: well under that, with room
            # for a loaded machine (it takes ~1 s alone).
            await rig.wait_phase(Phase.CONNECTED, timeout=30)
            assert time.monotonic() - t0 < 30
            assert any("internal error in modem-open" in r for r in reasons(rig))
            assert rig.driver.state.ladder_counts["redial"] == 1

    run(go())


# -- 4. a rung refused for good is shown, with why, in /status and `failberry status`

PORT_POWER_ONLY = RecoveryConfig(registration_timeout=1.0, redial_limit=0, modem_reset_limit=0,
                                 usb_rebind_limit=0, port_power_limit=1, reboots_per_day=0,
                                 backoff_initial=0.05, backoff_max=0.2, stable_after=600.0)


@pytest.mark.timeout(60)
def test_port_power_refused_for_good_is_in_status(tmp_path: Path) -> None:
    """Pi 3B: the Ethernet adapter shares the stick's ganged hub, so port power is refused;
    the user sees that rung, and why, in /status and `failberry status`, not only in the log."""
    async def go() -> None:
        async with Rig(tmp_path, {"reg": 2}, recovery=PORT_POWER_ONLY, ganged=True) as rig:
            await rig.wait_for(lambda: Rung.PORT_POWER in rig.driver.state.refused)
            rig.driver.report()
            modem = rig.status.parts["modem"].detail
            assert list(modem["refused"]) == ["port_power"]
            assert "1-1.1" in modem["refused"]["port_power"]  # the Ethernet adapter's port
            parse(ModemReport, modem)  # the typed report reads back strictly
            lines = statuscmd.render({"modem": {"state": "recovering", **modem}}, now=0.0)
            refused = [ln for ln in lines if "refused" in ln]
            assert len(refused) == 1 and refused[0].startswith("  refused for good: port_power (")

    run(go())
