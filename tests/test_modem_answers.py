"""What the stick's answers mean, decided on the pure side and tested without a port: the CME
code of a failed AT+CPIN?, the fate of a PIN entry, the registration of one read round."""

from __future__ import annotations

import pytest

from failberry.modem import events as ev
from failberry.modem.link import best_registration
from failberry.modem.parsers import Registration, RegStat, SimState
from failberry.modem.simcheck import PinAnswer, pin_settled, pin_verdict, sim_from_cme


@pytest.mark.parametrize(("code", "want"), [
    (10, SimState.MISSING), (13, SimState.MISSING), (15, SimState.MISSING),
    (14, SimState.NOT_READY), (11, SimState.PIN), (12, SimState.PUK),
    (3, SimState.OTHER), (16, SimState.OTHER), (None, SimState.ERROR),
])
def test_sim_state_of_a_failed_cpin(code: int | None, want: SimState) -> None:
    assert sim_from_cme(code) is want


@pytest.mark.parametrize(("answer", "want"), [
    (PinAnswer(before=3), ev.PinAccepted()),
    (PinAnswer("+CME ERROR: 16", 16, 3), ev.PinRejected(16, "+CME ERROR: 16")),
    # the counter went down: the SIM counted a wrong PIN, whatever the stick answered
    (PinAnswer("ERROR", None, 3, 2),
     ev.PinRejected(16, "ERROR; PIN tries left went from 3 to 2")),
    # the counter did not move: the SIM never saw it
    (PinAnswer("timeout", None, 3, 3),
     ev.PinUnsure("timeout; PIN tries left still 3", seen=False)),
    # no counter on this stick: nobody knows
    (PinAnswer("+CME ERROR: 3", 3, None, None), ev.PinUnsure("+CME ERROR: 3")),
    (PinAnswer("silence", None, 3, None), ev.PinUnsure("silence")),
])
def test_pin_verdict(answer: PinAnswer, want: ev.Event) -> None:
    assert pin_verdict(answer) == want


def test_only_ok_and_cme_16_settle_a_pin_entry_without_the_counter() -> None:
    assert pin_settled(PinAnswer()) and pin_settled(PinAnswer("x", 16))
    assert not pin_settled(PinAnswer("x", 3)) and not pin_settled(PinAnswer("x"))


CREG_SEARCHING = Registration("+CREG", RegStat.SEARCHING, 2)
CGREG_DENIED = Registration("+CGREG", RegStat.DENIED, 2)
CEREG_HOME = Registration("+CEREG", RegStat.HOME, 2, act=7)
CGREG_ROAMING = Registration("+CGREG", RegStat.ROAMING, 2)


@pytest.mark.parametrize(("regs", "want"), [
    ([], None),
    ([CREG_SEARCHING], CREG_SEARCHING),
    ([CREG_SEARCHING, CGREG_DENIED, CEREG_HOME], CEREG_HOME),  # registered beats denied
    ([CREG_SEARCHING, CGREG_ROAMING], CGREG_ROAMING),
    ([CREG_SEARCHING, CGREG_DENIED], CGREG_DENIED),  # denied beats searching
    ([CGREG_DENIED, CREG_SEARCHING], CGREG_DENIED),
])
def test_best_registration(regs: list[Registration], want: Registration | None) -> None:
    assert best_registration(regs) == want
