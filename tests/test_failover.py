"""The failover policy: priorities, hold-down on failback, reasons, the event log."""

from __future__ import annotations

from failberry.net.failover import Failover, UplinkView


def views(wired: tuple[bool, bool | None], mobile: tuple[bool, bool | None] = (True, True)
          ) -> dict[str, UplinkView]:
    return {"wired": UplinkView(10, *wired), "mobile": UplinkView(20, *mobile)}


def test_prefers_the_better_priority_at_start() -> None:
    f = Failover(hold_down=30)
    d = f.decide(views((True, True)), now=0)
    assert (d.active, d.previous, d.changed) == ("wired", None, True)
    assert "wired" in d.reason


def test_switches_at_once_when_the_active_fails_its_probes() -> None:
    f = Failover(hold_down=30)
    f.decide(views((True, True)), now=0)
    d = f.decide(views((True, False)), now=5)
    assert (d.active, d.previous) == ("mobile", "wired")
    assert "wired fails its probes" in d.reason


def test_carrier_loss_switches_even_before_a_probe_verdict() -> None:
    f = Failover(hold_down=30)
    f.decide(views((True, True)), now=0)
    d = f.decide(views((False, True)), now=1)
    assert d.active == "mobile"
    assert "lost its link" in d.reason


def test_failback_waits_for_the_hold_down() -> None:
    f = Failover(hold_down=30)
    f.decide(views((True, True)), now=0)
    f.decide(views((True, False)), now=1)
    d = f.decide(views((True, True)), now=10)  # wired is back: the clock starts now
    assert d.active == "mobile" and not d.changed
    assert d.recheck_in == 30
    d = f.decide(views((True, True)), now=39.9)
    assert d.active == "mobile"
    d = f.decide(views((True, True)), now=40)
    assert (d.active, d.previous) == ("wired", "mobile")
    assert "hold-down 30s" in d.reason


def test_a_flapping_primary_restarts_the_hold_down() -> None:
    f = Failover(hold_down=30)
    f.decide(views((True, True)), now=0)
    f.decide(views((True, False)), now=1)
    f.decide(views((True, True)), now=10)
    f.decide(views((True, False)), now=20)  # flaps again
    d = f.decide(views((True, True)), now=45)  # 25 s since it came back, not 35
    assert d.active == "mobile"
    assert f.decide(views((True, True)), now=75).active == "wired"


def test_stays_when_nothing_passes_but_the_link_is_there() -> None:
    f = Failover(hold_down=0)
    f.decide(views((True, True)), now=0)
    d = f.decide(views((True, False), (True, False)), now=1)
    assert d.active == "wired" and not d.changed
    assert "no uplink passes" in d.reason


def test_no_link_anywhere_means_no_active_uplink() -> None:
    f = Failover(hold_down=0)
    f.decide(views((True, True)), now=0)
    d = f.decide(views((False, None), (False, None)), now=1)
    assert d.active is None and d.changed


def test_waits_for_the_first_verdict_of_the_active_uplink() -> None:
    f = Failover(hold_down=30)
    f.decide(views((True, None), (True, None)), now=0)
    d = f.decide(views((True, None), (True, True)), now=0.1)  # mobile answered first
    assert d.active == "wired"


def test_events_are_kept_with_times_and_bounded() -> None:
    f = Failover(hold_down=0, keep=3)
    for i in range(5):
        f.decide(views((True, i % 2 == 0)), now=i, wall=1000.0 + i)
    assert len(f.events) == 3
    last = f.events[-1]
    assert last.at == 1004.0 and last.uplink == "wired" and last.previous == "mobile"
    assert f.switches == 5
