"""The failover policy, pure: each uplink's link state and probe verdict in, the active uplink
out, with a reason for every decision and the last N decisions kept for `failberry status`.

Rules, in order:
1. Usable means the link is present with carrier and an address, and the probes say up.
2. If the active uplink is usable, stay, unless a better (lower priority number) uplink has
   been usable for `hold_down` seconds: then fail back to it. The hold-down keeps a flapping
   primary from dragging clients back and forth.
3. If the active uplink is not usable, switch at once to the best usable uplink.
4. If none is usable, stay on the active one while its link is there (probes can all fail
   because the targets are down, not the path), else take the best uplink that has a link,
   else none.

A force (an admin's SMS `failover`/`failback`) overrides all of these: the forced uplink is
active until its time runs out, whatever the probes say, but only while its link is there; a
force of an uplink without a link is ignored, and one whose link goes is ended (both logged).
When it ends the rules above decide again (a failback that the hold-down allows is at once).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from failberry.reports import FailoverEvent

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class UplinkView:
    """What the policy knows about one uplink."""

    priority: int
    link: bool  # present, carrier, has an address
    healthy: bool | None  # probe verdict; None: no verdict yet

    @property
    def usable(self) -> bool:
        """A link and a good probe verdict."""
        return self.link and self.healthy is True


@dataclass(frozen=True)
class Decision:
    """The policy's answer: the active uplink, and why."""

    active: str | None
    previous: str | None
    reason: str
    recheck_in: float | None = None  # seconds until a pending failback, or a force's end

    @property
    def changed(self) -> bool:
        """True when the active uplink is a different one now."""
        return self.active != self.previous


@dataclass(frozen=True)
class Force:
    """An uplink forced active until monotonic time `until`, and who asked."""

    uplink: str
    until: float
    reason: str

    def as_dict(self, now: float) -> dict[str, object]:
        """JSON-ready form, with the seconds left at `now`."""
        return {"uplink": self.uplink, "remaining_s": round(max(0.0, self.until - now), 1),
                "reason": self.reason}


class Failover:
    """Holds the active uplink and the time each uplink became usable; no I/O, no clock."""

    def __init__(self, hold_down: float, keep: int = 20) -> None:
        self.hold_down = hold_down
        self.active: str | None = None
        self.forced: Force | None = None
        self._usable_since: dict[str, float] = {}
        self.events: collections.deque[FailoverEvent] = collections.deque(maxlen=keep)
        self.switches = 0  # every change of the active uplink, not only the kept ones

    def force(self, uplink: str | None, seconds: float, reason: str, now: float) -> None:
        """Make `uplink` the active one until `now + seconds` (monotonic), whatever the probes
        say; its link is checked at the next `decide`. `uplink` None (or no time) ends a
        force."""
        if uplink is None or seconds <= 0:
            if self.forced is not None:
                LOG.info("force of %s cancelled: %s", self.forced.uplink, reason)
            self.forced = None
            return
        LOG.info("forcing %s for %gs: %s", uplink, seconds, reason)
        self.forced = Force(uplink, now + seconds, reason)

    def _force_holds(self, views: Mapping[str, UplinkView], now: float) -> tuple[Force | None,
                                                                                  str]:
        """The force still in effect, or None and why the one there was has ended."""
        f = self.forced
        if f is None:
            return None, ""
        view = views.get(f.uplink)
        if view is None:
            LOG.warning("ignoring the force of %s (%s): there is no such uplink", f.uplink,
                        f.reason)
            why = ""
        elif not view.link:
            verb = "ending" if self.active == f.uplink else "ignoring"
            LOG.warning("%s the force of %s (%s): its link is not usable", verb, f.uplink,
                        f.reason)
            why = f"{verb} the force of {f.uplink}: it has no usable link"
        elif now >= f.until:
            LOG.info("force of %s over (%s)", f.uplink, f.reason)
            why = f"force of {f.uplink} over"
        else:
            return f, ""
        self.forced = None
        return None, why

    def decide(self, views: Mapping[str, UplinkView], now: float,
               wall: float | None = None) -> Decision:
        """The active uplink for these views at monotonic time `now`; records a switch."""
        for name, view in views.items():
            if view.usable:
                self._usable_since.setdefault(name, now)
            else:
                self._usable_since.pop(name, None)
        forced, ended = self._force_holds(views, now)
        if forced is not None:
            decision = Decision(forced.uplink, self.active,
                                f"{forced.uplink} forced for {forced.until - now:.0f}s: "
                                f"{forced.reason}", forced.until - now)
        else:
            decision = self._choose(views, now)
            if ended:
                decision = replace(decision, reason=f"{ended}; {decision.reason}")
        if decision.changed:
            LOG.info("active uplink %s -> %s: %s", decision.previous, decision.active,
                     decision.reason)
            self.events.append(FailoverEvent(now if wall is None else wall, decision.active,
                                             decision.previous, decision.reason))
            self.switches += 1
        self.active = decision.active
        return decision

    def _choose(self, views: Mapping[str, UplinkView], now: float) -> Decision:
        prev = self.active
        ranked = sorted(views, key=lambda n: (views[n].priority, n))
        usable = [n for n in ranked if views[n].usable]
        cur = views.get(prev) if prev is not None else None
        if prev is not None and cur is not None and cur.usable:
            better = [n for n in usable if views[n].priority < cur.priority]
            waits = []
            for name in better:
                waited = now - self._usable_since[name]
                if waited >= self.hold_down:
                    return Decision(name, prev, f"{name} has been healthy for {waited:.1f}s "
                                    f"(hold-down {self.hold_down:g}s) and is preferred to {prev}")
                waits.append(self.hold_down - waited)
            return Decision(prev, prev, f"{prev} is healthy",
                            min(waits) if waits else None)
        if prev is not None and cur is not None and cur.link and cur.healthy is None:
            # Its first probe round is still out: do not leave it for a faster-probed backup.
            return Decision(prev, prev, f"{prev} has a link; waiting for its first probe round")
        if usable:
            best = usable[0]
            why = _why_not(prev, cur)
            return Decision(best, prev, f"{why}; {best} is healthy" if why else
                            f"{best} is the best healthy uplink")
        if prev is not None and cur is not None and cur.link:
            return Decision(prev, prev, f"no uplink passes its probes; staying on {prev}")
        linked = [n for n in ranked if views[n].link]
        if linked:
            return Decision(linked[0], prev, f"no uplink passes its probes; {linked[0]} "
                            "has a link")
        return Decision(None, prev, "no uplink has a link")


def _why_not(name: str | None, view: UplinkView | None) -> str:
    if name is None:
        return ""
    if view is None or not view.link:
        return f"{name} lost its link"
    if view.healthy is False:
        return f"{name} fails its probes"
    return f"{name} has no probe verdict yet"
