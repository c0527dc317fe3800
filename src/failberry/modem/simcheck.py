"""The SIM and PIN transitions of the modem machine.

Nothing here climbs the recovery ladder: resetting hardware does not put a SIM in, unlock
it or make it answer sooner. An unusable SIM is looked at again with backoff, for ever (a
`+CPIN?` costs nothing and the user may fix it meanwhile). The PIN is the one thing sent
with care: each wrong try brings the SIM closer to its PUK, so a PIN the SIM rejected
(`+CME ERROR: 16`, or its PIN counter went down) is never sent again, and a PIN whose fate
is unknown (the stick went silent) is sent again at most `MAX_PIN_UNSURE` times in all.

What the stick's answers mean for the SIM is decided here too, not in the driver: the CME code
of a failed `AT+CPIN?` (`sim_from_cme`), and what became of a PIN entry (`pin_verdict`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from failberry.modem.errors import CME_INCORRECT_PASSWORD, CME_SIM_BUSY, CME_SIM_MISSING
from failberry.modem.events import (
    Action,
    CancelTimer,
    EnterPin,
    Event,
    PinAccepted,
    PinRejected,
    PinUnsure,
    PortReady,
    QueryRegistration,
    QuerySim,
    SimReport,
    StartTimer,
    TimerFired,
)
from failberry.modem.parsers import SimState
from failberry.modem.state import RECHECK, REGISTRATION, SIM_RETRY, STEP, ModemState, Phase

if TYPE_CHECKING:
    from failberry.modem.machine import Machine

Result = tuple[ModemState, list[Action]]

# A SIM allows three PIN tries: two entries that may or may not have reached it still leave
# it one, so it never ends up wanting its PUK because of us.
MAX_PIN_UNSURE = 2


# TS 27.007 9.2.1: the CME codes a failed AT+CPIN? may carry, and what each says of the SIM.
CME_SIM_STATES: dict[int, SimState] = {
    **dict.fromkeys(CME_SIM_MISSING, SimState.MISSING),  # 10 not inserted, 13 failure, 15 wrong
    CME_SIM_BUSY: SimState.NOT_READY,
    11: SimState.PIN,
    12: SimState.PUK,
}


def sim_from_cme(code: int | None) -> SimState:
    """The SIM state an error answer to `AT+CPIN?` means: `code` is its CME code, None for a
    plain `ERROR` (what a stick without working +CMEE says for "no SIM")."""
    if code is None:
        return SimState.ERROR
    return CME_SIM_STATES.get(code, SimState.OTHER)


@dataclass(frozen=True)
class PinAnswer:
    """What `AT+CPIN=<pin>` got: `error` None for OK, else its text and CME code (None for a
    plain ERROR or silence); the SIM's remaining PIN tries before and after, where known."""

    error: str | None = None
    cme: int | None = None
    before: int | None = None
    after: int | None = None


def pin_settled(a: PinAnswer) -> bool:
    """Does the answer alone say what became of the PIN (no need to read the counter)?"""
    return a.error is None or a.cme == CME_INCORRECT_PASSWORD


def pin_verdict(a: PinAnswer) -> PinAccepted | PinRejected | PinUnsure:
    """Only `+CME ERROR: 16` or a PIN counter that went down is a rejection; silence,
    `ERROR` or other codes leave it unknown whether the SIM saw the PIN (unless its counter
    shows it did not)."""
    if a.error is None:
        return PinAccepted()
    if a.cme == CME_INCORRECT_PASSWORD:
        return PinRejected(CME_INCORRECT_PASSWORD, a.error)
    if a.before is not None and a.after is not None:
        if a.after < a.before:
            return PinRejected(CME_INCORRECT_PASSWORD, f"{a.error}; PIN tries left went from "
                               f"{a.before} to {a.after}")
        return PinUnsure(f"{a.error}; PIN tries left still {a.after}", seen=False)
    return PinUnsure(a.error)


def ready(m: Machine, s: ModemState, e: Event) -> Result:
    """The port answered: ask the SIM."""
    assert isinstance(e, PortReady)
    return (m.to(s, Phase.SIM_CHECK, f"port ready ({e.manufacturer} {e.model})".strip(),
                 pin_sent=False, sim_retries=0), [QuerySim()])


def sim_failed(m: Machine, s: ModemState, why: str) -> Result:
    """An unusable SIM: no hardware rungs, look again after a backoff."""
    delay = m.backoff(s.sim_rechecks)
    new = m.to(s, Phase.SIM_FAILED, f"{why}; checking again in {delay:.1f}s", last_error=why,
               sim_rechecks=s.sim_rechecks + 1)
    return new, [CancelTimer(STEP), StartTimer(RECHECK, delay)]


def sim(m: Machine, s: ModemState, e: Event) -> Result:
    """What +CPIN? said."""
    assert isinstance(e, SimReport)
    state = e.sim
    if state is SimState.READY:
        # A SIM that is ready has its PIN counter back at full: unsure entries are forgotten.
        return (m.to(s, Phase.REGISTERING, "SIM ready; waiting for registration",
                     sim_rechecks=0, pin_unsure=0),
                [CancelTimer(STEP), QueryRegistration(),
                 StartTimer(REGISTRATION, m.cfg.registration_timeout)])
    if state is SimState.PIN:
        if s.pin_rejected:
            return sim_failed(m, s, "SIM wants its PIN, and the configured one was rejected "
                              "before; not sending it again (fix modem.pin)")
        if not m.has_pin:
            return sim_failed(m, s, "SIM wants a PIN and modem.pin is not set")
        if s.pin_sent:
            return sim_failed(m, s, "SIM still wants its PIN after it was accepted")
        if s.pin_unsure >= MAX_PIN_UNSURE:
            return sim_failed(m, s, f"SIM wants its PIN; {s.pin_unsure} entries went "
                              "unanswered, not risking the SIM's last try (enter it by hand)")
        return m.to(s, Phase.PIN_SENT, "SIM wants its PIN; entering it", pin_sent=True), \
            [EnterPin()]
    if state is SimState.NOT_READY:
        if s.sim_retries < m.sim_retries:
            return (replace(s, sim_retries=s.sim_retries + 1, reason="SIM busy"),
                    [StartTimer(SIM_RETRY, m.sim_retry)])
        return sim_failed(m, s, f"SIM not ready after {s.sim_retries * m.sim_retry:g}s")
    if state is SimState.MISSING:
        return sim_failed(m, s, "SIM not inserted")
    if state is SimState.ERROR:
        return sim_failed(m, s, "SIM not usable: AT+CPIN? answered ERROR (no SIM?)")
    if state in (SimState.PUK, SimState.PUK2):
        return sim_failed(m, s, f"SIM is locked ({state.value}): unlock it in a phone")
    return sim_failed(m, s, f"SIM not usable: {state.value}")


def sim_timer(m: Machine, s: ModemState, e: Event) -> Result:
    """SIM_RETRY (busy) or RECHECK (unusable): ask again, bounded by the step timer."""
    assert isinstance(e, TimerFired)
    if e.name == SIM_RETRY:
        return m.to(s, Phase.SIM_CHECK, "checking the SIM again"), [QuerySim()]
    if e.name == RECHECK:
        return (m.to(s, Phase.SIM_CHECK, "checking the SIM again", sim_retries=0),
                [StartTimer(STEP, m.step_timeout), QuerySim()])
    return s, []


def pin_ok(m: Machine, s: ModemState, e: Event) -> Result:
    """The PIN went in: ask the SIM again."""
    return m.to(s, Phase.SIM_CHECK, "PIN accepted"), [QuerySim()]


def pin_bad(m: Machine, s: ModemState, e: Event) -> Result:
    """The SIM said the PIN is wrong: never again."""
    assert isinstance(e, PinRejected)
    why = f"SIM PIN rejected ({e.error}); not retrying, so the SIM is not pushed toward PUK"
    return sim_failed(m, replace(s, pin_rejected=True), why)


def pin_unsure(m: Machine, s: ModemState, e: Event) -> Result:
    """Nobody knows whether the SIM saw the PIN: not a rejection; look again later."""
    assert isinstance(e, PinUnsure)
    counted = 0 if e.seen is False else 1  # the PIN counter says the SIM never saw it
    s = replace(s, pin_unsure=s.pin_unsure + counted, pin_sent=False)
    return sim_failed(m, s, f"PIN entry got no clear answer ({e.error})")
