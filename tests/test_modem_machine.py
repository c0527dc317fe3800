"""The pure state machine with a fake clock: every path is events in, actions out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from failberry.config import RecoveryConfig
from failberry.modem import events as ev
from failberry.modem.machine import (
    BACKOFF,
    PPP_EXIT,
    REBOOT_WAIT,
    REGISTRATION,
    STABLE,
    STEP,
    Machine,
    ModemState,
    Phase,
    PppOutcome,
    Rung,
)
from failberry.modem.parsers import Registration, RegStat, SimState


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


RECOVERY = RecoveryConfig(registration_timeout=60.0, redial_limit=2, modem_reset_limit=1,
                          usb_rebind_limit=1, port_power_limit=1, reboots_per_day=1,
                          backoff_initial=5.0, backoff_max=300.0, stable_after=600.0)
HOME = ev.RegistrationReport(Registration("+CREG", RegStat.HOME, 2))
DENIED = ev.RegistrationReport(Registration("+CREG", RegStat.DENIED, 2))
ADDED = ev.DeviceAdded("/dev/ttyUSB1", "/dev/ttyUSB2", "1-1.2")


def machine(has_pin: bool = False, rand: float = 0.5,
            recovery: RecoveryConfig = RECOVERY) -> tuple[Machine, FakeClock]:
    clock = FakeClock()
    return Machine(recovery, has_pin=has_pin, clock=clock, rand=lambda: rand), clock


def feed(m: Machine, state: ModemState, *events: ev.Event) -> tuple[ModemState, list[ev.Action]]:
    actions: list[ev.Action] = []
    for e in events:
        state, acts = m.handle(state, e)
        actions += acts
    return state, actions


def io_actions(actions: list[ev.Action]) -> list[ev.Action]:
    return [a for a in actions if not isinstance(a, ev.StartTimer | ev.CancelTimer)]


def connected(m: Machine) -> ModemState:
    state, _ = feed(m, ModemState(), ADDED, ev.PortReady("ZTE", "MF180"),
                    ev.SimReport(SimState.READY), HOME, ev.PppUp("ppp0", "10.64.64.64"))
    assert state.phase is Phase.CONNECTED
    return state


def test_no_stick_at_start_says_so() -> None:
    """A Pi booted without the stick: /status and `failberry status` say no modem was found,
    not "absent, starting" for as long as it runs."""
    s = ModemState()
    assert s.phase is Phase.ABSENT and "no modem found" in s.reason


def test_plugged_in_to_connected() -> None:
    m, _ = machine()
    s, acts = feed(m, ModemState(), ADDED)
    assert s.phase is Phase.PROBING and io_actions(acts) == [ev.OpenPort("/dev/ttyUSB1")]
    s, acts = feed(m, s, ev.PortReady("ZTE", "MF180"))
    assert s.phase is Phase.SIM_CHECK and acts == [ev.QuerySim()]
    s, acts = feed(m, s, ev.SimReport(SimState.READY))
    assert s.phase is Phase.REGISTERING
    # setup is over: its step bound is cancelled, or it fires later in another SIM check
    assert acts == [ev.CancelTimer(STEP), ev.QueryRegistration(),
                    ev.StartTimer(REGISTRATION, 60.0)]
    s, acts = feed(m, s, ev.RegistrationReport(Registration("+CREG", RegStat.SEARCHING)))
    assert s.phase is Phase.REGISTERING and acts == []
    s, acts = feed(m, s, HOME)
    assert s.phase is Phase.DIALING and ev.StartPpp("/dev/ttyUSB2") in acts
    s, acts = feed(m, s, ev.PppUp("ppp0", "10.64.64.64"))
    assert (s.phase, s.interface, s.address) == (Phase.CONNECTED, "ppp0", "10.64.64.64")
    assert ev.StartTimer(STABLE, 600.0) in acts


def test_pin_entered_once_then_never_again_after_acceptance_loop() -> None:
    m, _ = machine(has_pin=True)
    s, _ = feed(m, ModemState(), ADDED, ev.PortReady())
    s, acts = feed(m, s, ev.SimReport(SimState.PIN))
    assert s.phase is Phase.PIN_SENT and acts == [ev.EnterPin()]
    s, acts = feed(m, s, ev.PinAccepted())
    assert s.phase is Phase.SIM_CHECK and acts == [ev.QuerySim()]
    s, acts = feed(m, s, ev.SimReport(SimState.PIN))  # still asks: do not send it again
    assert s.phase is Phase.SIM_FAILED and ev.EnterPin() not in acts


def test_wrong_pin_is_never_retried() -> None:
    m, _ = machine(has_pin=True)
    s, acts = feed(m, ModemState(), ADDED, ev.PortReady(), ev.SimReport(SimState.PIN),
                   ev.PinRejected(16, "+CME ERROR 16 (incorrect password)"))
    assert acts.count(ev.EnterPin()) == 1
    assert s.phase is Phase.SIM_FAILED and s.pin_rejected and "not retrying" in s.reason
    # the stick re-enumerates, the SIM asks again: still no PIN sent, no timers either
    s, acts = feed(m, s, ev.DeviceRemoved("/dev/ttyUSB1"), ADDED, ev.PortReady(),
                   ev.SimReport(SimState.PIN))
    assert ev.EnterPin() not in acts and s.phase is Phase.SIM_FAILED


def test_pin_needed_but_not_configured() -> None:
    m, _ = machine(has_pin=False)
    s, acts = feed(m, ModemState(), ADDED, ev.PortReady(), ev.SimReport(SimState.PIN))
    assert s.phase is Phase.SIM_FAILED and "modem.pin" in (s.last_error or "")
    assert ev.EnterPin() not in acts


@pytest.mark.parametrize(("sim", "text"), [(SimState.MISSING, "not inserted"),
                                           (SimState.PUK, "SIM PUK")])
def test_sim_missing_or_locked(sim: SimState, text: str) -> None:
    m, _ = machine(has_pin=True)
    s, acts = feed(m, ModemState(), ADDED, ev.PortReady(), ev.SimReport(sim))
    assert s.phase is Phase.SIM_FAILED and text in (s.last_error or "")
    assert ev.EnterPin() not in acts
    # looked at again with backoff, in case someone inserts or unlocks one; no hardware rung
    assert ev.StartTimer("recheck", RECOVERY.backoff_initial) in acts
    assert ev.CancelTimer(STEP) in acts
    s, acts = feed(m, s, ev.TimerFired("recheck"))
    assert s.phase is Phase.SIM_CHECK
    assert acts == [ev.StartTimer(STEP, m.step_timeout), ev.QuerySim()]


def test_sim_busy_is_retried_a_bounded_number_of_times() -> None:
    m, _ = machine()
    s, _ = feed(m, ModemState(), ADDED, ev.PortReady())
    queries = 0
    for _ in range(40):
        s, acts = feed(m, s, ev.SimReport(SimState.NOT_READY))
        if s.phase is not Phase.SIM_CHECK:
            break
        s, acts = feed(m, s, ev.TimerFired("sim_retry"))
        queries += acts.count(ev.QuerySim())
    assert s.phase is Phase.SIM_FAILED and queries == m.sim_retries


def test_registration_denied_waits_instead_of_climbing() -> None:
    m, _ = machine()
    s, _ = feed(m, ModemState(), ADDED, ev.PortReady(), ev.SimReport(SimState.READY))
    s, acts = feed(m, s, DENIED)
    assert s.phase is Phase.DENIED and "denied" in (s.last_error or "")
    for _ in range(5):
        s, acts = feed(m, s, DENIED, ev.TimerFired("recheck"))
        assert s.phase is Phase.DENIED
        assert io_actions(acts) == [ev.QueryRegistration()]
    s, acts = feed(m, s, HOME)
    assert s.phase is Phase.DIALING


def test_ladder_climbs_with_backoff_limits_and_reboots_per_day() -> None:
    m, clock = machine()
    s, _ = feed(m, ModemState(), ADDED, ev.PortReady(), ev.SimReport(SimState.READY))
    rungs: list[str] = []
    delays: list[float] = []
    for _ in range(12):
        s, acts = feed(m, s, ev.TimerFired(REGISTRATION) if s.phase is Phase.REGISTERING
                       else ev.AtFailed("AT", "no answer", silent=True))
        assert s.phase is Phase.RECOVERING
        delays += [a.seconds for a in acts if isinstance(a, ev.StartTimer) and a.name == BACKOFF]
        s, acts = feed(m, s, ev.TimerFired(BACKOFF))
        rungs.append(type(io_actions(acts)[-1]).__name__)
        if s.phase is Phase.REBOOTING:
            break
        if s.phase is Phase.RESETTING:
            s, _ = feed(m, s, ev.TimerFired("settle"))
        assert s.phase is Phase.PROBING
    assert rungs == ["OpenPort", "OpenPort", "ResetModem", "UsbRebind", "PortPowerCycle",
                     "Reboot"]
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0]  # rand 0.5: no jitter offset
    assert len(s.reboots) == 1 and s.ladder_counts["reboot"] == 1
    # the box came back with the same day's reboot on record: no second reboot today
    s2 = ModemState(reboots=s.reboots)
    assert m.limit(s2, m_rung("reboot")) == 0
    clock.advance(86401)
    assert m.limit(s2, m_rung("reboot")) == 1


def m_rung(name: str) -> Rung:
    return Rung(name)


def test_backoff_jitter_and_cap() -> None:
    lo, _ = machine(rand=0.0)
    hi, _ = machine(rand=1.0)
    assert lo.backoff(0) == 3.75 and hi.backoff(0) == 6.25
    assert lo.backoff(3) == 30.0 and hi.backoff(3) == 50.0
    assert hi.backoff(20) == 300.0 and lo.backoff(20) == 225.0  # capped at backoff_max


def test_stable_link_resets_the_ladder() -> None:
    m, _ = machine()
    s = connected(m)
    s, _ = feed(m, s, ev.PppExited(16), ev.TimerFired(BACKOFF))
    assert s.ladder_counts["redial"] == 1 and s.attempts == 1
    s, _ = feed(m, s, ev.PortReady(), ev.SimReport(SimState.READY), HOME,
                ev.PppUp("ppp0", "10.64.64.64"), ev.TimerFired(STABLE))
    assert s.ladder_counts["redial"] == 0 and s.attempts == 0


def test_no_traffic_stops_pppd_then_recovers() -> None:
    m, _ = machine()
    s = connected(m)
    s, acts = feed(m, s, ev.TrafficFailed("3 of 3 probes lost"))
    assert s.phase is Phase.LOST and ev.StopPpp() in acts
    s, acts = feed(m, s, ev.PppExited(5))
    assert s.phase is Phase.RECOVERING and "no traffic" in (s.last_error or "")
    assert not s.ppp_running


def test_power_refused_for_safety_skips_that_rung() -> None:
    rec = RecoveryConfig(redial_limit=0, modem_reset_limit=0, usb_rebind_limit=0,
                         port_power_limit=2, reboots_per_day=1, backoff_initial=1.0)
    m, _ = machine(recovery=rec)
    s, _ = feed(m, ModemState(), ADDED, ev.AtFailed("AT", "silent", silent=True))
    s, acts = feed(m, s, ev.TimerFired(BACKOFF))
    assert ev.PortPowerCycle("1-1.2") in acts
    s, _ = feed(m, s, ev.ActionFailed(Rung.PORT_POWER, "Ethernet on hub 1-1", permanent=True))
    s, acts = feed(m, s, ev.TimerFired(BACKOFF))
    assert [a for a in acts if isinstance(a, ev.Reboot)]  # straight to the last rung


def test_a_rung_refused_for_good_stays_skipped_when_the_ladder_starts_over() -> None:
    rec = RecoveryConfig(redial_limit=1, modem_reset_limit=0, usb_rebind_limit=0,
                         port_power_limit=1, reboots_per_day=0, backoff_initial=1.0)
    m, _ = machine(recovery=rec)
    silent = ev.AtFailed("AT", "silent", silent=True)
    s, _ = feed(m, ModemState(), ADDED, silent, ev.TimerFired(BACKOFF), silent)
    s, acts = feed(m, s, ev.TimerFired(BACKOFF))
    assert ev.PortPowerCycle("1-1.2") in acts
    s, _ = feed(m, s, ev.ActionFailed(Rung.PORT_POWER, "Ethernet on hub 1-1", permanent=True))
    assert s.refused == {Rung.PORT_POWER} and "port_power failed" in (s.last_error or "")
    assert s.refusals == ((Rung.PORT_POWER, "Ethernet on hub 1-1"),)  # why, for /status
    # the ladder started over at redial: the refused rung is not climbed again, nor counted
    assert s.pending_rung is Rung.REDIAL and max(s.ladder_counts.values()) <= 1
    for _ in range(3):
        s, acts = feed(m, s, ev.TimerFired(BACKOFF), silent)
        assert not [a for a in acts if isinstance(a, ev.PortPowerCycle)]
        assert s.pending_rung is Rung.REDIAL and s.refused == {Rung.PORT_POWER}
    s, _ = feed(m, s, ADDED)  # the same stick back where it was: still refused
    assert s.refused == {Rung.PORT_POWER}
    s, _ = feed(m, s, silent, ev.DeviceAdded("/dev/ttyUSB1", "/dev/ttyUSB2", "1-1.3"))
    assert s.refused == frozenset()  # behind another hub port the refusal says nothing


@pytest.mark.parametrize("status", sorted(PPP_EXIT))
def test_every_pppd_exit_status(status: int) -> None:
    m, _ = machine()
    s = connected(m)
    s, acts = feed(m, s, ev.PppExited(status))
    outcome = PPP_EXIT[status][1]
    assert s.interface is None and s.address is None
    assert s.ppp_running is (outcome is PppOutcome.REDIAL)  # only then a new pppd runs
    if outcome is PppOutcome.FATAL:
        assert s.phase is Phase.FAILED and io_actions(acts) == []
        assert f"pppd exited {status}" in (s.last_error or "")
    elif outcome is PppOutcome.AUTH:
        assert s.phase is Phase.FAILED and ev.StartTimer("recheck", 300.0) in acts
    elif outcome is PppOutcome.REDIAL:
        assert s.phase is Phase.DIALING and ev.StartPpp("/dev/ttyUSB2") in acts
        assert s.ladder_counts["redial"] == 0  # not a fault
    else:
        assert s.phase is Phase.RECOVERING and s.pending_rung is not None
        assert s.last_error == f"pppd exited {status}: {PPP_EXIT[status][0]}"


def test_device_removed_then_back() -> None:
    m, _ = machine()
    s = connected(m)
    s, acts = feed(m, s, ev.DeviceRemoved("/dev/ttyUSB1"))
    assert s.phase is Phase.ABSENT and ev.StopPpp() in acts
    s, acts = feed(m, s, ev.PppExited(16))
    assert s.phase is Phase.ABSENT and not s.ppp_running
    s, acts = feed(m, s, ADDED)
    assert s.phase is Phase.PROBING and ev.OpenPort("/dev/ttyUSB1") in acts


def test_device_gone_too_long_climbs() -> None:
    m, _ = machine()
    s = connected(m)
    s, _ = feed(m, s, ev.PortLost("read failed: EIO"), ev.PppExited(16))
    s, acts = feed(m, s, ev.TimerFired("absent"))
    assert ev.StartTimer(BACKOFF, 5.0) in acts
    assert s.phase is Phase.RECOVERING and "gone" in (s.last_error or "")


def test_unknown_events_are_ignored() -> None:
    m, _ = machine()
    s, acts = feed(m, ModemState(), ev.PinAccepted(), ev.TimerFired("nothing"))
    assert s == ModemState() and acts == []


def test_start_over_skips_rungs_whose_limit_is_zero() -> None:
    rec = RecoveryConfig(redial_limit=0, modem_reset_limit=1, usb_rebind_limit=0,
                         port_power_limit=0, reboots_per_day=0, backoff_initial=1.0)
    m, _ = machine(recovery=rec)
    s, _ = feed(m, ModemState(), ADDED, ev.AtFailed("AT", "silent", silent=True))
    assert s.pending_rung is Rung.MODEM_RESET
    s, _ = feed(m, s, ev.TimerFired(BACKOFF), ev.TimerFired("settle"),
                   ev.AtFailed("AT", "silent", silent=True))
    # every allowed rung used: start over at the lowest one allowed, not at redial
    assert s.pending_rung is Rung.MODEM_RESET and s.ladder_counts["modem_reset"] == 0


def test_nothing_allowed_waits_then_looks_again_without_counting() -> None:
    rec = RecoveryConfig(redial_limit=0, modem_reset_limit=0, usb_rebind_limit=0,
                         port_power_limit=0, reboots_per_day=0, backoff_initial=1.0,
                         backoff_max=300.0)
    m, _ = machine(recovery=rec)
    s, acts = feed(m, ModemState(), ADDED, ev.AtFailed("AT", "silent", silent=True))
    assert s.pending_rung is None and ev.StartTimer(BACKOFF, 300.0) in acts
    s, acts = feed(m, s, ev.TimerFired(BACKOFF))
    assert s.phase is Phase.PROBING and ev.OpenPort("/dev/ttyUSB1") in acts
    assert sum(s.ladder_counts.values()) == 0


def test_failed_reboot_goes_on_and_a_hung_one_is_noticed() -> None:
    m, _ = machine()
    s, _ = feed(m, ModemState(), ADDED, ev.PortReady(), ev.SimReport(SimState.READY))
    s = replace(s, tries=(2, 1, 1, 1, 0), attempts=5)
    s, _ = feed(m, s, ev.TimerFired(REGISTRATION))
    assert s.pending_rung is Rung.REBOOT
    s, acts = feed(m, s, ev.TimerFired(BACKOFF))
    assert s.phase is Phase.REBOOTING and ev.StartTimer(REBOOT_WAIT, m.reboot_wait) in acts
    after, _ = feed(m, s, ev.ActionFailed(Rung.REBOOT,
                                      "`systemctl reboot` exited with status 1"))
    assert after.phase is Phase.RECOVERING and "reboot failed" in (after.last_error or "")
    back, _ = feed(m, after, ADDED)  # and a stick showing up is used again
    assert back.phase is Phase.PROBING
    hung, _ = feed(m, s, ev.TimerFired(REBOOT_WAIT))
    assert hung.phase is Phase.RECOVERING and "still running" in (hung.last_error or "")


def test_pin_unsure_is_resent_at_most_twice() -> None:
    m, _ = machine(has_pin=True)
    s, _ = feed(m, ModemState(), ADDED, ev.PortReady())
    sent = 0
    for _ in range(5):
        s, acts = feed(m, s, ev.SimReport(SimState.PIN))
        if ev.EnterPin() not in acts:
            break
        sent += 1
        s, acts = feed(m, s, ev.PinUnsure("no final result within 10s"))
        assert s.phase is Phase.SIM_FAILED and not s.pin_rejected
        s, _ = feed(m, s, ev.TimerFired("recheck"))
    assert sent == 2 and s.phase is Phase.SIM_FAILED and "last try" in s.reason


def test_task_crash_is_a_fault() -> None:
    m, _ = machine()
    s, _ = feed(m, ModemState(), ADDED)
    s, _ = feed(m, s, ev.TaskFailed("modem-open", "RuntimeError('bug')"))
    assert s.phase is Phase.RECOVERING
    assert "internal error in modem-open" in (s.last_error or "")


def test_pin_not_seen_by_the_sim_is_not_counted_and_ready_forgets() -> None:
    m, _ = machine(has_pin=True)
    s, _ = feed(m, ModemState(), ADDED, ev.PortReady())
    for _ in range(4):
        s, acts = feed(m, s, ev.SimReport(SimState.PIN))
        assert ev.EnterPin() in acts
        s, _ = feed(m, s, ev.PinUnsure("no final result", seen=False), ev.TimerFired("recheck"))
    assert s.pin_unsure == 0
    s, _ = feed(m, s, ev.SimReport(SimState.PIN), ev.PinUnsure("silence"),
                ev.TimerFired("recheck"))
    assert s.pin_unsure == 1
    s, _ = feed(m, s, ev.SimReport(SimState.PIN), ev.PinAccepted(), ev.SimReport(SimState.READY))
    assert s.phase is Phase.REGISTERING and s.pin_unsure == 0
