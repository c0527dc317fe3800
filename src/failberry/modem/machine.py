"""The modem state machine, pure: `Machine.handle(state, event) -> (state, actions)`.

Like pyroute2's DHCP client it is a TRANSITIONS table of (phase, event type) -> handler, time
comes from a replaceable clock, and every phase change is logged as `old -> new: reason`.
The recovery ladder lives here too: each rung is an action the machine emits, climbed with
exponential backoff and jitter, each rung limited, reset once the link has been stable. The
SIM and PIN transitions are in `simcheck`, the ladder's tables in `ladder`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from failberry.backoff import scattered
from failberry.config import RecoveryConfig
from failberry.modem import link, simcheck
from failberry.modem.events import (
    Action,
    ActionFailed,
    AtFailed,
    CancelTimer,
    ClosePort,
    DeviceAdded,
    DeviceRemoved,
    Event,
    OpenPort,
    PinAccepted,
    PinRejected,
    PinUnsure,
    PortLost,
    PortPowerCycle,
    PortReady,
    PppExited,
    PppUp,
    Reboot,
    RegistrationReport,
    ResetModem,
    SimReport,
    StartTimer,
    StopPpp,
    TaskFailed,
    TimerFired,
    TrafficFailed,
    UsbRebind,
)
from failberry.modem.ladder import (
    PPP_EXIT,
    RUNGS,
    Clock,
    PppOutcome,
    Rung,
    SystemClock,
    describe_ppp_exit,
)
from failberry.modem.state import (
    ABSENT_WAIT,
    ALL_TIMERS,
    BACKOFF,
    DIAL,
    REBOOT_WAIT,
    RECHECK,
    REGISTRATION,
    SETTLE,
    SIM_RETRY,
    STABLE,
    STEP,
    ModemState,
    Phase,
)

__all__ = ["ABSENT_WAIT", "ALL_TIMERS", "BACKOFF", "DAY", "DIAL", "PPP_EXIT", "REBOOT_WAIT",
           "RECHECK", "REGISTRATION", "RUNGS", "SETTLE", "SIM_RETRY", "STABLE", "STEP",
           "TRANSITIONS", "Clock", "Machine", "ModemState", "Phase", "PppOutcome", "Rung",
           "SystemClock", "describe_ppp_exit"]

LOG = logging.getLogger(__name__)

DAY = 86400.0


Result = tuple[ModemState, list[Action]]
Handler = Callable[["Machine", ModemState, Event], Result]


class Machine:
    """The transition function with its configuration, clock and jitter source."""

    def __init__(self, recovery: RecoveryConfig, *, has_pin: bool, clock: Clock | None = None,
                 rand: Callable[[], float] | None = None, settle: float = 20.0,
                 dial_timeout: float = 90.0, sim_retry: float = 2.0,
                 sim_retries: int = 15, step_timeout: float = 120.0,
                 reboot_wait: float = 300.0) -> None:
        import random

        self.cfg = recovery
        self.has_pin = has_pin
        self.clock = clock or SystemClock()
        self.rand = rand or random.Random().random
        self.settle = settle
        self.dial_timeout = dial_timeout
        self.sim_retry = sim_retry
        self.sim_retries = sim_retries
        self.step_timeout = step_timeout
        self.reboot_wait = reboot_wait

    def probe(self, state: ModemState, reason: str) -> Result:
        """(Re)open the port, with a bound on how long setup and the SIM check may take."""
        assert state.port is not None
        return (self.to(state, Phase.PROBING, reason),
                [CancelTimer(SETTLE), StartTimer(STEP, self.step_timeout),
                 OpenPort(state.port)])

    # -- entry point

    def handle(self, state: ModemState, event: Event) -> Result:
        """One step: the next state and the actions to perform, in order."""
        handler = (TRANSITIONS.get((state.phase, type(event)))
                   or TRANSITIONS.get((None, type(event))))
        if handler is None:
            LOG.debug("modem %s: ignoring %s", state.phase.value, event)
            return state, []
        new, actions = handler(self, state, event)
        if new.phase is not state.phase:
            LOG.info("modem %s -> %s: %s", state.phase.value, new.phase.value, new.reason)
        return new, actions

    # -- helpers

    def to(self, state: ModemState, phase: Phase, reason: str, **changes: object) -> ModemState:
        """`state` moved to `phase` for `reason`, with `changes`."""
        return replace(state, phase=phase, reason=reason, **changes)  # type: ignore[arg-type]

    def reboots_last_day(self, state: ModemState) -> int:
        """Reboots we asked for in the last day: the budget `[recovery] reboots_per_day`
        spends. Past it the board stays up (no reboot rung) and `/status` says so."""
        now = self.clock.time()
        return sum(1 for t in state.reboots if now - t < DAY)

    def limit(self, state: ModemState, rung: Rung) -> int:
        """How many more times `rung` may run in this climb (reboots: in the last day)."""
        i = RUNGS.index(rung)
        if rung in state.refused:
            return 0
        if rung is Rung.REBOOT:
            return max(0, self.cfg.reboots_per_day - self.reboots_last_day(state))
        limits = (self.cfg.redial_limit, self.cfg.modem_reset_limit, self.cfg.usb_rebind_limit,
                  self.cfg.port_power_limit)
        return max(0, limits[i] - state.tries[i])

    def _applicable(self, state: ModemState, rung: Rung) -> bool:
        if rung in (Rung.REDIAL, Rung.MODEM_RESET):
            return state.port is not None
        if rung in (Rung.USB_REBIND, Rung.PORT_POWER):
            return state.usb_path is not None
        return True

    def backoff(self, attempts: int) -> float:
        """initial * 2^attempts ± 25 %, never above max (`attempts` counts from 0)."""
        return scattered(attempts + 1, self.cfg.backoff_initial, self.cfg.backoff_max,
                         self.rand())

    def fail(self, state: ModemState, reason: str) -> Result:
        """A fault: stop pppd if it runs, then wait out the backoff before the next rung."""
        cancel: list[Action] = [CancelTimer(t) for t in ALL_TIMERS]
        if state.ppp_running:
            return (self.to(state, Phase.LOST, reason, last_error=reason),
                    [*cancel, StopPpp()])
        tries = state.tries
        rung = self._next_rung(state)
        if rung is None and any(tries):
            # Everything allowed has been tried: start again from the lowest rung the config
            # allows (a rung with limit 0 stays off), slowly.
            LOG.warning("recovery ladder exhausted (%s); starting over after backoff",
                        state.ladder_counts)
            tries = (0,) * len(RUNGS)
            rung = self._next_rung(replace(state, tries=tries))
        # Nothing allowed at all (every limit 0, today's reboots spent): look again later,
        # when a reboot may be allowed again or the modem has come back.
        delay = self.backoff(state.attempts) if rung else self.cfg.backoff_max
        new = self.to(state, Phase.RECOVERING,
                      f"{reason}; {rung.value if rung else 'no recovery rung allowed; waiting'} "
                      f"in {delay:.1f}s", last_error=reason, tries=tries, pending_rung=rung,
                      interface=None, address=None, connected_since=None)
        return new, [*cancel, StartTimer(BACKOFF, delay)]

    def _next_rung(self, state: ModemState) -> Rung | None:
        return next((r for r in RUNGS
                     if self._applicable(state, r) and self.limit(state, r) > 0), None)

    def climb(self, state: ModemState) -> Result:
        """The backoff ran out: perform the pending rung."""
        rung = state.pending_rung
        if rung is None:
            if state.port is None:
                return self.to(state, Phase.ABSENT, "waiting for the modem to appear"), []
            # No rung allowed: still look at the modem now and then (not a rung, not
            # counted), or a modem that came good would never be used again.
            return self.probe(state, "no recovery rung allowed; looking at the modem again")
        i = RUNGS.index(rung)
        tries = tuple(n + 1 if j == i else n for j, n in enumerate(state.tries))
        state = replace(state, tries=tries, attempts=state.attempts + 1, pending_rung=None)
        why = f"recovery rung {rung.value} (try {tries[i]})"
        LOG.info("modem recovery: %s after: %s", why, state.last_error)
        if rung is Rung.REDIAL:
            return self.probe(state, why)
        settle = StartTimer(SETTLE, self.settle)
        if rung is Rung.MODEM_RESET:
            return self.to(state, Phase.RESETTING, why), [ResetModem(), settle]
        if rung in (Rung.USB_REBIND, Rung.PORT_POWER):
            assert state.usb_path is not None
            act: Action = (UsbRebind(state.usb_path) if rung is Rung.USB_REBIND
                           else PortPowerCycle(state.usb_path))
            return self.to(state, Phase.RESETTING, why), [ClosePort(), act, settle]
        reboots = (*state.reboots, self.clock.time())
        return (self.to(state, Phase.REBOOTING, why, reboots=reboots),
                [ClosePort(), Reboot(f"{why}: {state.last_error}"),
                 StartTimer(REBOOT_WAIT, self.reboot_wait)])


# -- transitions. Each takes (machine, state, event) and returns (state, actions).


def _added(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, DeviceAdded)
    usb_path = e.usb_path or s.usb_path
    # A refusal is about what sits behind the stick's hub port: a stick elsewhere starts clean.
    refusals = s.refusals if usb_path == s.usb_path else ()
    s = replace(s, port=e.port, data_port=e.data_port or e.port, usb_path=usb_path,
                refusals=refusals)
    new, acts = m.probe(s, f"modem found on {e.port}")
    return new, [CancelTimer(ABSENT_WAIT), *acts]


def _removed(m: Machine, s: ModemState, e: Event) -> Result:
    why = (f"device {e.port} removed" if isinstance(e, DeviceRemoved)
           else f"port lost: {e.reason}" if isinstance(e, PortLost) else "device gone")
    if s.phase in (Phase.ABSENT, Phase.RESETTING, Phase.REBOOTING):
        return s, []  # expected while a rung re-enumerates the stick
    acts: list[Action] = [CancelTimer(t) for t in ALL_TIMERS]
    acts += [ClosePort(), StartTimer(ABSENT_WAIT, m.cfg.registration_timeout)]
    if s.ppp_running:
        acts.append(StopPpp())
    return (m.to(s, Phase.ABSENT, why, last_error=why, interface=None, address=None,
                  connected_since=None), acts)


def _probe_lost(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, PortLost)
    return m.fail(s, f"cannot use {s.port}: {e.reason}")


def _absent_timeout(m: Machine, s: ModemState, e: Event) -> Result:
    if isinstance(e, TimerFired) and e.name == ABSENT_WAIT:
        return m.fail(s, f"modem gone for {m.cfg.registration_timeout:g}s")
    return s, []


def _at_failed(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, AtFailed)
    what = "modem silent" if e.silent else "command failed"
    return m.fail(s, f"{what}: {e.command}: {e.error}")


def _recovering_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    return m.climb(s) if e.name == BACKOFF else (s, [])


def _resetting_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == SETTLE and s.port is not None:
        return m.probe(s, "modem settled; probing it again")
    return s, []


def _action_failed(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, ActionFailed)
    if e.permanent:
        # e.g. port power refused because the Ethernet adapter shares the hub: skip the rung,
        # also after the ladder starts over, while the stick stays where it is.
        LOG.info("modem recovery: rung %s refused for good: %s", e.rung.value, e.reason)
        if e.rung not in s.refused:
            s = replace(s, refusals=(*s.refusals, (e.rung, e.reason)))
    return m.fail(s, f"{e.rung.value} failed: {e.reason}")


def _failed_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == RECHECK and s.port is not None:
        return m.probe(s, "trying again after an authentication failure")
    return s, []


def _step_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == STEP:
        return m.fail(s, f"modem setup made no progress in {m.step_timeout:g}s "
                      f"({s.phase.value})")
    return simcheck.sim_timer(m, s, e) if s.phase is Phase.SIM_CHECK else (s, [])


def _rebooting_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == REBOOT_WAIT:
        return m.fail(s, f"reboot asked for {m.reboot_wait:g}s ago, yet still running")
    return s, []


def _task_failed(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TaskFailed)
    if s.phase is Phase.ABSENT:
        return s, []
    return m.fail(s, f"internal error in {e.task}: {e.error}")


P = Phase
TRANSITIONS: dict[tuple[Phase | None, type], Handler] = {
    (P.ABSENT, DeviceAdded): _added,
    (P.RESETTING, DeviceAdded): _added,
    (P.RECOVERING, DeviceAdded): _added,
    (P.SIM_FAILED, DeviceAdded): _added,
    (P.FAILED, DeviceAdded): _added,
    (P.ABSENT, TimerFired): _absent_timeout,
    (None, DeviceRemoved): _removed,
    (None, PortLost): _removed,
    (P.PROBING, PortLost): _probe_lost,
    (P.PROBING, PortReady): simcheck.ready,
    (P.PROBING, AtFailed): _at_failed,
    (P.SIM_CHECK, SimReport): simcheck.sim,
    (P.SIM_CHECK, AtFailed): _at_failed,
    (P.SIM_CHECK, TimerFired): _step_timer,
    (P.PROBING, TimerFired): _step_timer,
    (P.PIN_SENT, TimerFired): _step_timer,
    (P.SIM_FAILED, TimerFired): simcheck.sim_timer,
    (P.PIN_SENT, PinAccepted): simcheck.pin_ok,
    (P.PIN_SENT, PinRejected): simcheck.pin_bad,
    (P.PIN_SENT, PinUnsure): simcheck.pin_unsure,
    (P.PIN_SENT, AtFailed): _at_failed,
    (P.REGISTERING, RegistrationReport): link.registration,
    (P.REGISTERING, TimerFired): link.registering_timer,
    (P.REGISTERING, AtFailed): _at_failed,
    (P.DENIED, RegistrationReport): link.registration,
    (P.DENIED, TimerFired): link.denied_timer,
    (P.DENIED, AtFailed): _at_failed,
    (P.DIALING, PppUp): link.ppp_up,
    (P.DIALING, PppExited): link.ppp_exit,
    (P.DIALING, TimerFired): link.dial_timer,
    (P.CONNECTED, PppExited): link.ppp_exit,
    (P.CONNECTED, TrafficFailed): link.traffic,
    (P.CONNECTED, TimerFired): link.connected_timer,
    (P.LOST, PppExited): link.ppp_exit,
    (P.RECOVERING, TimerFired): _recovering_timer,
    (P.RESETTING, TimerFired): _resetting_timer,
    (P.RESETTING, ActionFailed): _action_failed,
    (P.PROBING, ActionFailed): _action_failed,
    (P.REBOOTING, ActionFailed): _action_failed,
    (P.REBOOTING, TimerFired): _rebooting_timer,
    (None, TaskFailed): _task_failed,
    (P.FAILED, TimerFired): _failed_timer,
    (None, PppExited): link.ppp_exit_any,
    (P.ABSENT, PppUp): link.stray_ppp_up,
}
