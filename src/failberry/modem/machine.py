"""The modem state machine, pure: `Machine.handle(state, event) -> (state, actions)`.

Like pyroute2's DHCP client it is a TRANSITIONS table of (phase, event type) -> handler, time
comes from a replaceable clock, and every phase change is logged as `old -> new: reason`.
The recovery ladder lives here too: each rung is an action the machine emits, climbed with
exponential backoff and jitter, each rung limited, reset once the link has been stable."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from failberry.config import RecoveryConfig
from failberry.modem.events import (
    Action,
    ActionFailed,
    AtFailed,
    CancelTimer,
    ClosePort,
    DeviceAdded,
    DeviceRemoved,
    EnterPin,
    Event,
    OpenPort,
    PinAccepted,
    PinRejected,
    PortLost,
    PortPowerCycle,
    PortReady,
    PppExited,
    PppUp,
    QueryRegistration,
    QuerySim,
    Reboot,
    RegistrationReport,
    ResetModem,
    SimReport,
    StartPpp,
    StartTimer,
    StopPpp,
    TimerFired,
    TrafficFailed,
    UsbRebind,
)
from failberry.modem.parsers import RegStat, SimState

LOG = logging.getLogger(__name__)

DAY = 86400.0


class Phase(enum.StrEnum):
    """Where the modem is in its life."""

    ABSENT = "absent"
    PROBING = "probing"
    SIM_CHECK = "sim_check"
    PIN_SENT = "pin_sent"
    SIM_FAILED = "sim_failed"
    REGISTERING = "registering"
    DENIED = "denied"
    DIALING = "dialing"
    CONNECTED = "connected"
    LOST = "lost"
    RECOVERING = "recovering"
    RESETTING = "resetting"
    FAILED = "failed"
    REBOOTING = "rebooting"


class Rung(enum.StrEnum):
    """The recovery ladder, lowest first."""

    REDIAL = "redial"
    MODEM_RESET = "modem_reset"
    USB_REBIND = "usb_rebind"
    PORT_POWER = "port_power"
    REBOOT = "reboot"


RUNGS = tuple(Rung)

# Timer names.
BACKOFF, REGISTRATION, DIAL, STABLE = "backoff", "registration", "dial", "stable"
SETTLE, RECHECK, SIM_RETRY, ABSENT_WAIT = "settle", "recheck", "sim_retry", "absent"
STEP = "step"  # a bound on probing + SIM check, whatever replies get lost on the way
ALL_TIMERS = (BACKOFF, REGISTRATION, DIAL, STABLE, SETTLE, RECHECK, SIM_RETRY, ABSENT_WAIT,
              STEP)


class PppOutcome(enum.Enum):
    """What a pppd exit status means for us."""

    RETRY = "retry"  # a fault: climb the ladder
    REDIAL = "redial"  # not a fault (idle/connect-time limits): dial again now
    FATAL = "fatal"  # our setup is wrong; retrying cannot help
    AUTH = "auth"  # credentials refused: retry rarely, never climb to hardware


# man pppd, EXIT STATUS.
PPP_EXIT: dict[int, tuple[str, PppOutcome]] = {
    0: ("the peer terminated the link", PppOutcome.RETRY),
    1: ("an immediately fatal error occurred", PppOutcome.RETRY),
    2: ("an error in the options given", PppOutcome.FATAL),
    3: ("pppd is not setuid-root and the user is not root", PppOutcome.FATAL),
    4: ("the kernel does not support PPP", PppOutcome.FATAL),
    5: ("pppd was sent SIGINT, SIGTERM or SIGHUP", PppOutcome.RETRY),
    6: ("the serial port could not be locked", PppOutcome.RETRY),
    7: ("the serial port could not be opened", PppOutcome.RETRY),
    8: ("the connect script failed", PppOutcome.RETRY),
    9: ("the pty command could not be run", PppOutcome.FATAL),
    10: ("the PPP negotiation failed", PppOutcome.RETRY),
    11: ("the peer failed to authenticate itself", PppOutcome.RETRY),
    12: ("the link was idle", PppOutcome.REDIAL),
    13: ("the connect time limit was reached", PppOutcome.REDIAL),
    14: ("callback was negotiated", PppOutcome.RETRY),
    15: ("the peer is not responding to echo requests", PppOutcome.RETRY),
    16: ("the modem hung up", PppOutcome.RETRY),
    17: ("serial loopback was detected", PppOutcome.RETRY),
    18: ("the init script failed", PppOutcome.RETRY),
    19: ("we failed to authenticate to the peer", PppOutcome.AUTH),
}


def describe_ppp_exit(status: int) -> str:
    """`pppd exited 16: the modem hung up`."""
    text = PPP_EXIT.get(status, ("an undocumented status", PppOutcome.RETRY))[0]
    return f"pppd exited {status}: {text}"


class Clock(Protocol):
    """Monotonic time for timeouts, wall time for "reboots per day" (kept across reboots)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""

    def time(self) -> float:
        """Seconds since the epoch."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def time(self) -> float:
        """`time.time()`."""
        return time.time()


@dataclass(frozen=True)
class ModemState:
    """Everything the machine remembers; replaced, never mutated."""

    phase: Phase = Phase.ABSENT
    reason: str = "starting"
    port: str | None = None
    data_port: str | None = None
    usb_path: str | None = None
    pin_sent: bool = False  # entered since the port was (re)opened
    pin_rejected: bool = False  # sticky: a wrong PIN is never sent again
    sim_retries: int = 0
    ppp_running: bool = False
    interface: str | None = None
    address: str | None = None
    connected_since: float | None = None
    tries: tuple[int, ...] = field(default=(0,) * len(RUNGS))
    attempts: int = 0  # rungs performed in this climb: the backoff exponent
    pending_rung: Rung | None = None
    reboots: tuple[float, ...] = ()  # wall times of reboots we asked for
    last_error: str | None = None

    @property
    def ladder_counts(self) -> dict[str, int]:
        """Tries per rung in the current climb."""
        return {r.value: n for r, n in zip(RUNGS, self.tries, strict=True)}


Result = tuple[ModemState, list[Action]]
Handler = Callable[["Machine", ModemState, Event], Result]


class Machine:
    """The transition function with its configuration, clock and jitter source."""

    def __init__(self, recovery: RecoveryConfig, *, has_pin: bool, clock: Clock | None = None,
                 rand: Callable[[], float] | None = None, settle: float = 20.0,
                 dial_timeout: float = 90.0, sim_retry: float = 2.0,
                 sim_retries: int = 15, step_timeout: float = 120.0) -> None:
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

    def probe(self, state: ModemState, reason: str) -> Result:
        """(Re)open the port, with a bound on how long setup and the SIM check may take."""
        assert state.port is not None
        return (self._to(state, Phase.PROBING, reason),
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

    def _to(self, state: ModemState, phase: Phase, reason: str, **changes: object) -> ModemState:
        return replace(state, phase=phase, reason=reason, **changes)  # type: ignore[arg-type]

    def limit(self, state: ModemState, rung: Rung) -> int:
        """How many more times `rung` may run in this climb (reboots: in the last day)."""
        i = RUNGS.index(rung)
        if rung is Rung.REBOOT:
            now = self.clock.time()
            recent = sum(1 for t in state.reboots if now - t < DAY)
            return max(0, self.cfg.reboots_per_day - recent)
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
        """Exponential backoff with jitter: about initial * 2^attempts, never above max."""
        base = min(self.cfg.backoff_max, self.cfg.backoff_initial * 2.0 ** min(attempts, 30))
        return min(self.cfg.backoff_max, base * (0.75 + 0.5 * self.rand()))

    def fail(self, state: ModemState, reason: str) -> Result:
        """A fault: stop pppd if it runs, then wait out the backoff before the next rung."""
        cancel: list[Action] = [CancelTimer(t) for t in ALL_TIMERS]
        if state.ppp_running:
            return (self._to(state, Phase.LOST, reason, last_error=reason),
                    [*cancel, StopPpp()])
        tries = state.tries
        rung = next((r for r in RUNGS
                     if self._applicable(state, r) and self.limit(state, r) > 0), None)
        if rung is None:
            # Everything allowed today has been tried: start again from the bottom, slowly.
            LOG.warning("recovery ladder exhausted (%s); starting over after backoff",
                        state.ladder_counts)
            tries = (0,) * len(RUNGS)
            rung = Rung.REDIAL if state.port is not None else None
        delay = self.backoff(state.attempts)
        new = self._to(state, Phase.RECOVERING,
                       f"{reason}; {rung.value if rung else 'waiting for the modem'} "
                       f"in {delay:.1f}s", last_error=reason, tries=tries, pending_rung=rung,
                       interface=None, address=None, connected_since=None)
        return new, [*cancel, StartTimer(BACKOFF, delay)]

    def climb(self, state: ModemState) -> Result:
        """The backoff ran out: perform the pending rung."""
        rung = state.pending_rung
        if rung is None:
            return self._to(state, Phase.ABSENT, "waiting for the modem to appear"), []
        i = RUNGS.index(rung)
        tries = tuple(n + 1 if j == i else n for j, n in enumerate(state.tries))
        state = replace(state, tries=tries, attempts=state.attempts + 1, pending_rung=None)
        why = f"recovery rung {rung.value} (try {tries[i]})"
        LOG.info("modem recovery: %s after: %s", why, state.last_error)
        if rung is Rung.REDIAL:
            return self.probe(state, why)
        settle = StartTimer(SETTLE, self.settle)
        if rung is Rung.MODEM_RESET:
            return self._to(state, Phase.RESETTING, why), [ResetModem(), settle]
        if rung in (Rung.USB_REBIND, Rung.PORT_POWER):
            assert state.usb_path is not None
            act: Action = (UsbRebind(state.usb_path) if rung is Rung.USB_REBIND
                           else PortPowerCycle(state.usb_path))
            return self._to(state, Phase.RESETTING, why), [ClosePort(), act, settle]
        reboots = (*state.reboots, self.clock.time())
        return (self._to(state, Phase.REBOOTING, why, reboots=reboots),
                [ClosePort(), Reboot(f"{why}: {state.last_error}")])


# -- transitions. Each takes (machine, state, event) and returns (state, actions).


def _added(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, DeviceAdded)
    s = replace(s, port=e.port, data_port=e.data_port or e.port,
                usb_path=e.usb_path or s.usb_path)
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
    return (m._to(s, Phase.ABSENT, why, last_error=why, interface=None, address=None,
                  connected_since=None), acts)


def _probe_lost(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, PortLost)
    return m.fail(s, f"cannot use {s.port}: {e.reason}")


def _absent_timeout(m: Machine, s: ModemState, e: Event) -> Result:
    if isinstance(e, TimerFired) and e.name == ABSENT_WAIT:
        return m.fail(s, f"modem gone for {m.cfg.registration_timeout:g}s")
    return s, []


def _ready(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, PortReady)
    return (m._to(s, Phase.SIM_CHECK, f"port ready ({e.manufacturer} {e.model})".strip(),
                  pin_sent=False, sim_retries=0), [QuerySim()])


def _at_failed(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, AtFailed)
    what = "modem silent" if e.silent else "command failed"
    return m.fail(s, f"{what}: {e.command}: {e.error}")


def _sim(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, SimReport)
    sim = e.sim
    if sim is SimState.READY:
        return (m._to(s, Phase.REGISTERING, "SIM ready; waiting for registration"),
                [QueryRegistration(), StartTimer(REGISTRATION, m.cfg.registration_timeout)])
    if sim is SimState.PIN:
        if s.pin_rejected:
            return _sim_failed(m, s, "SIM wants its PIN, and the configured one was rejected "
                               "before; not sending it again (fix modem.pin)")
        if not m.has_pin:
            return _sim_failed(m, s, "SIM wants a PIN and modem.pin is not set")
        if s.pin_sent:
            return _sim_failed(m, s, "SIM still wants its PIN after it was accepted")
        return m._to(s, Phase.PIN_SENT, "SIM wants its PIN; entering it", pin_sent=True), \
            [EnterPin()]
    if sim is SimState.NOT_READY and s.sim_retries < m.sim_retries:
        return (replace(s, sim_retries=s.sim_retries + 1, reason="SIM busy"),
                [StartTimer(SIM_RETRY, m.sim_retry)])
    if sim is SimState.MISSING:
        new, acts = _sim_failed(m, s, "SIM not inserted")
        return new, [*acts, StartTimer(RECHECK, m.cfg.backoff_max)]
    if sim in (SimState.PUK, SimState.PUK2):
        return _sim_failed(m, s, f"SIM is locked ({sim.value}): unlock it in a phone")
    return _sim_failed(m, s, f"SIM not usable: {sim.value}")


def _sim_failed(m: Machine, s: ModemState, why: str) -> Result:
    return m._to(s, Phase.SIM_FAILED, why, last_error=why), []


def _sim_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name in (SIM_RETRY, RECHECK):
        return m._to(s, Phase.SIM_CHECK, "checking the SIM again"), [QuerySim()]
    return s, []


def _pin_ok(m: Machine, s: ModemState, e: Event) -> Result:
    return m._to(s, Phase.SIM_CHECK, "PIN accepted"), [QuerySim()]


def _pin_bad(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, PinRejected)
    why = f"SIM PIN rejected ({e.error}); not retrying, so the SIM is not pushed toward PUK"
    return m._to(s, Phase.SIM_FAILED, why, pin_rejected=True, last_error=why), []


def _registration(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, RegistrationReport)
    reg = e.registration
    if reg.stat.registered:
        assert s.data_port is not None
        how = "roaming" if reg.stat in (RegStat.ROAMING, RegStat.CSFB_NOT_PREFERRED_ROAMING) \
            else "home"
        return (m._to(s, Phase.DIALING, f"registered ({how}, {reg.kind}); dialing",
                      ppp_running=True),
                [CancelTimer(REGISTRATION), CancelTimer(RECHECK),
                 StartTimer(DIAL, m.dial_timeout), StartPpp(s.data_port)])
    if reg.stat is RegStat.DENIED:
        why = f"registration denied by the network ({reg.kind})"
        if s.phase is Phase.DENIED:
            return s, []
        # Resetting hardware does not make a network accept a SIM: wait and look again.
        return (m._to(s, Phase.DENIED, why, last_error=why),
                [CancelTimer(REGISTRATION), StartTimer(RECHECK, m.cfg.registration_timeout)])
    return s, []


def _registering_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == REGISTRATION:
        return m.fail(s, f"not registered after {m.cfg.registration_timeout:g}s")
    return s, []


def _denied_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == RECHECK:
        return s, [QueryRegistration(), StartTimer(RECHECK, m.cfg.registration_timeout)]
    return s, []


def _ppp_up(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, PppUp)
    return (m._to(s, Phase.CONNECTED, f"{e.interface} up with {e.address}",
                  interface=e.interface, address=e.address,
                  connected_since=m.clock.monotonic(), ppp_running=True),
            [CancelTimer(DIAL), StartTimer(STABLE, m.cfg.stable_after)])


def _ppp_exit(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, PppExited)
    s = replace(s, ppp_running=False, interface=None, address=None, connected_since=None)
    why = describe_ppp_exit(e.status)
    outcome = PPP_EXIT.get(e.status, ("", PppOutcome.RETRY))[1]
    if s.phase is Phase.LOST:
        return m.fail(s, s.last_error or why)
    if s.phase not in (Phase.DIALING, Phase.CONNECTED):
        return s, []
    if outcome is PppOutcome.FATAL:
        return (m._to(s, Phase.FAILED, f"{why}; fix the setup, not retrying", last_error=why),
                [CancelTimer(t) for t in ALL_TIMERS])
    if outcome is PppOutcome.AUTH:
        return (m._to(s, Phase.FAILED, f"{why}; check modem.username/password",
                      last_error=why),
                [*(CancelTimer(t) for t in ALL_TIMERS), StartTimer(RECHECK, m.cfg.backoff_max)])
    if outcome is PppOutcome.REDIAL and s.data_port is not None:
        return (m._to(s, Phase.DIALING, f"{why}; dialing again", ppp_running=True),
                [StartTimer(DIAL, m.dial_timeout), StartPpp(s.data_port)])
    return m.fail(s, why)


def _dial_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == DIAL:
        return m.fail(s, f"no PPP link within {m.dial_timeout:g}s of dialing")
    return s, []


def _connected_timer(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TimerFired)
    if e.name == STABLE:
        LOG.info("modem link stable for %gs; recovery ladder reset", m.cfg.stable_after)
        return replace(s, tries=(0,) * len(RUNGS), attempts=0, reason="link stable"), []
    return s, []


def _traffic(m: Machine, s: ModemState, e: Event) -> Result:
    assert isinstance(e, TrafficFailed)
    return m.fail(s, f"connected but no traffic passes: {e.reason}")


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
        # e.g. port power refused because the Ethernet adapter shares the hub: skip the rung.
        i = next((j for j, r in enumerate(RUNGS) if r.value == e.action), None)
        if i is not None:
            s = replace(s, tries=tuple(10_000 if j == i else n for j, n in enumerate(s.tries)))
    return m.fail(s, f"{e.action} failed: {e.reason}")


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
    return _sim_timer(m, s, e) if s.phase is Phase.SIM_CHECK else (s, [])


def _ppp_exit_any(m: Machine, s: ModemState, e: Event) -> Result:
    # pppd ending while we are elsewhere (absent, being stopped): only note it.
    return replace(s, ppp_running=False, interface=None, address=None), []


def _stray_ppp_up(m: Machine, s: ModemState, e: Event) -> Result:
    return replace(s, ppp_running=True), [StopPpp()]


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
    (P.PROBING, PortReady): _ready,
    (P.PROBING, AtFailed): _at_failed,
    (P.SIM_CHECK, SimReport): _sim,
    (P.SIM_CHECK, AtFailed): _at_failed,
    (P.SIM_CHECK, TimerFired): _step_timer,
    (P.PROBING, TimerFired): _step_timer,
    (P.PIN_SENT, TimerFired): _step_timer,
    (P.SIM_FAILED, TimerFired): _sim_timer,
    (P.PIN_SENT, PinAccepted): _pin_ok,
    (P.PIN_SENT, PinRejected): _pin_bad,
    (P.PIN_SENT, AtFailed): _at_failed,
    (P.REGISTERING, RegistrationReport): _registration,
    (P.REGISTERING, TimerFired): _registering_timer,
    (P.REGISTERING, AtFailed): _at_failed,
    (P.DENIED, RegistrationReport): _registration,
    (P.DENIED, TimerFired): _denied_timer,
    (P.DENIED, AtFailed): _at_failed,
    (P.DIALING, PppUp): _ppp_up,
    (P.DIALING, PppExited): _ppp_exit,
    (P.DIALING, TimerFired): _dial_timer,
    (P.CONNECTED, PppExited): _ppp_exit,
    (P.CONNECTED, TrafficFailed): _traffic,
    (P.CONNECTED, TimerFired): _connected_timer,
    (P.LOST, PppExited): _ppp_exit,
    (P.RECOVERING, TimerFired): _recovering_timer,
    (P.RESETTING, TimerFired): _resetting_timer,
    (P.RESETTING, ActionFailed): _action_failed,
    (P.PROBING, ActionFailed): _action_failed,
    (P.FAILED, TimerFired): _failed_timer,
    (None, PppExited): _ppp_exit_any,
    (P.ABSENT, PppUp): _stray_ppp_up,
}
