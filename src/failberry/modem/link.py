"""The link transitions of the modem machine: registration, dialing, the PPP link up and
down, and what each pppd exit status leads to (the table is in `ladder`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from failberry.modem.events import (
    Action,
    CancelTimer,
    Event,
    PppExited,
    PppUp,
    QueryRegistration,
    RegistrationReport,
    StartPpp,
    StartTimer,
    StopPpp,
    TimerFired,
    TrafficFailed,
)
from failberry.modem.ladder import PPP_EXIT, RUNGS, PppOutcome, describe_ppp_exit
from failberry.modem.parsers import Registration, RegStat
from failberry.modem.state import (
    ALL_TIMERS,
    DIAL,
    RECHECK,
    REGISTRATION,
    STABLE,
    ModemState,
    Phase,
)

if TYPE_CHECKING:
    from failberry.modem.machine import Machine

LOG = logging.getLogger(__name__)

Result = tuple[ModemState, list[Action]]


def best_registration(regs: Sequence[Registration]) -> Registration | None:
    """Of one round of +CREG?/+CGREG?/+CEREG? read replies, the one the machine hears: any
    that is registered (data can flow over that domain), else a denial, else the first."""
    return next((r for r in regs if r.stat.registered),
                next((r for r in regs if r.stat is RegStat.DENIED),
                     regs[0] if regs else None))


def registration(m: Machine, s: ModemState, e: Event) -> Result:
    """A registration report: dial when registered, wait when denied."""
    assert isinstance(e, RegistrationReport)
    reg = e.registration
    if reg.stat.registered:
        assert s.data_port is not None
        how = "roaming" if reg.stat in (RegStat.ROAMING, RegStat.CSFB_NOT_PREFERRED_ROAMING) \
            else "home"
        return (m.to(s, Phase.DIALING, f"registered ({how}, {reg.kind}); dialing",
                      ppp_running=True),
                [CancelTimer(REGISTRATION), CancelTimer(RECHECK),
                 StartTimer(DIAL, m.dial_timeout), StartPpp(s.data_port)])
    if reg.stat is RegStat.DENIED:
        why = f"registration denied by the network ({reg.kind})"
        if s.phase is Phase.DENIED:
            return s, []
        # Resetting hardware does not make a network accept a SIM: wait and look again.
        return (m.to(s, Phase.DENIED, why, last_error=why),
                [CancelTimer(REGISTRATION), StartTimer(RECHECK, m.cfg.registration_timeout)])
    return s, []


def registering_timer(m: Machine, s: ModemState, e: Event) -> Result:
    """No registration in time: a fault."""
    assert isinstance(e, TimerFired)
    if e.name == REGISTRATION:
        return m.fail(s, f"not registered after {m.cfg.registration_timeout:g}s")
    return s, []


def denied_timer(m: Machine, s: ModemState, e: Event) -> Result:
    """Denied: ask the network again, no hardware rung."""
    assert isinstance(e, TimerFired)
    if e.name == RECHECK:
        return s, [QueryRegistration(), StartTimer(RECHECK, m.cfg.registration_timeout)]
    return s, []


def ppp_up(m: Machine, s: ModemState, e: Event) -> Result:
    """pppd has an address: connected."""
    assert isinstance(e, PppUp)
    return (m.to(s, Phase.CONNECTED, f"{e.interface} up with {e.address}",
                  interface=e.interface, address=e.address,
                  connected_since=m.clock.monotonic(), ppp_running=True),
            [CancelTimer(DIAL), StartTimer(STABLE, m.cfg.stable_after)])


def ppp_exit(m: Machine, s: ModemState, e: Event) -> Result:
    """pppd ended: what its exit status means decides what comes next."""
    assert isinstance(e, PppExited)
    s = replace(s, ppp_running=False, interface=None, address=None, connected_since=None)
    why = e.why or describe_ppp_exit(e.status)
    outcome = PPP_EXIT.get(e.status, ("", PppOutcome.RETRY))[1]
    if s.phase is Phase.LOST:
        return m.fail(s, s.last_error or why)
    if s.phase not in (Phase.DIALING, Phase.CONNECTED):
        return s, []
    if outcome is PppOutcome.FATAL:
        return (m.to(s, Phase.FAILED, f"{why}; fix the setup, not retrying", last_error=why),
                [CancelTimer(t) for t in ALL_TIMERS])
    if outcome is PppOutcome.AUTH:
        return (m.to(s, Phase.FAILED, f"{why}; check modem.username/password",
                      last_error=why),
                [*(CancelTimer(t) for t in ALL_TIMERS), StartTimer(RECHECK, m.cfg.backoff_max)])
    if outcome is PppOutcome.REDIAL and s.data_port is not None:
        return (m.to(s, Phase.DIALING, f"{why}; dialing again", ppp_running=True),
                [StartTimer(DIAL, m.dial_timeout), StartPpp(s.data_port)])
    return m.fail(s, why)


def dial_timer(m: Machine, s: ModemState, e: Event) -> Result:
    """No link in time after dialing: a fault."""
    assert isinstance(e, TimerFired)
    if e.name == DIAL:
        return m.fail(s, f"no PPP link within {m.dial_timeout:g}s of dialing")
    return s, []


def connected_timer(m: Machine, s: ModemState, e: Event) -> Result:
    """Up long enough: the ladder starts from the bottom again."""
    assert isinstance(e, TimerFired)
    if e.name == STABLE:
        LOG.info("modem link stable for %gs; recovery ladder reset", m.cfg.stable_after)
        return replace(s, tries=(0,) * len(RUNGS), attempts=0, reason="link stable"), []
    return s, []


def traffic(m: Machine, s: ModemState, e: Event) -> Result:
    """The probes say nothing passes: a fault."""
    assert isinstance(e, TrafficFailed)
    return m.fail(s, f"connected but no traffic passes: {e.reason}")


def ppp_exit_any(m: Machine, s: ModemState, e: Event) -> Result:
    """pppd ending while we are elsewhere (absent, being stopped): only note it."""
    return replace(s, ppp_running=False, interface=None, address=None), []


def stray_ppp_up(m: Machine, s: ModemState, e: Event) -> Result:
    """A link nobody asked for: stop it."""
    return replace(s, ppp_running=True), [StopPpp()]
