"""The event-driven engine: an address change triggers an update at once; a slow periodic
check asks the authoritative servers and repairs drift; failures back off exponentially with
jitter; fatal answers stop updates until the config changes.

The core is pure: `decide(state, now)` says what to do next, `succeeded`/`failed`/`verified`
fold a result into the state. `Updater` is the thin asyncio shell: one worker per record, so
one update in flight per name, and a burst of address changes collapses into one update of the
latest address (the worker reads `desired` only when it starts an attempt)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from failberry.aio import within
from failberry.backoff import jittered
from failberry.dyndns.base import DyndnsError, Provider, Record, Retry, UpdateResult, Verifier

LOG = logging.getLogger(__name__)


@dataclass
class RecordState:
    """Everything the engine knows about one record."""

    record: Record
    desired: str | None = None         # the latest address to publish (from events)
    source: str | None = None          # local address to send from (the uplink's)
    sent: str | None = None            # `desired` of the last successful update
    published: str | None = None       # what the provider says it now publishes
    checked: bool = False              # a check compared the record with an address of ours
    check_failures: int = 0            # consecutive checks that got no answer
    prior: tuple[str, str] | None = None  # (sent, published) saved before the restart
    confirmed: bool = False            # the last check found `published`
    last_success: float | None = None  # wall clock
    last_confirmed: float | None = None  # wall clock: a check found `published`
    last_error: str | None = None
    check_error: str | None = None
    failures: int = 0                  # consecutive failed attempts
    last_retry: Retry | None = None
    next_retry: float | None = None    # monotonic
    next_check: float = 0.0            # monotonic
    blocked: str | None = None         # a fatal error; cleared only by `reset()`
    attempts: int = 0
    updates: int = 0
    in_flight: bool = False


@dataclass(frozen=True)
class Update:
    """Send `address` from `source`."""

    address: str
    source: str | None


@dataclass(frozen=True)
class Verify:
    """Ask the authoritative servers."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do before `until` (monotonic; None: until woken)."""

    until: float | None


Action = Update | Verify | Wait


# Before the first update after a start, the record is checked: it may already hold the
# address (a restart, a reboot), and an update then is needless (dyndns2 counts `nochg` as
# abuse). A check that gets no answer (the uplink is not routed yet at boot) is retried with
# backoff this many times before the update goes out unchecked.
FIRST_CHECK_TRIES = 3


@dataclass(frozen=True)
class Timing:
    """The engine's knobs."""

    check_interval: float = 600.0
    retry_initial: float = 2.0
    retry_max: float = 300.0


def backoff(failures: int, timing: Timing, rng: random.Random) -> float:
    """The delay after `failures` failures in a row (`failberry.backoff.jittered`)."""
    return jittered(failures, timing.retry_initial, timing.retry_max, rng)


def decide(st: RecordState, now: float) -> Action:
    """The next thing to do for this record."""
    if st.blocked is not None or st.desired is None:
        # Blocked, or no address known yet: nothing to send and nothing to compare a check
        # with (a check now would also "use up" the first contact; see FIRST_CHECK_TRIES).
        return Wait(None)
    if st.desired != st.sent:
        if st.next_retry is not None and now < st.next_retry:
            return Wait(st.next_retry)
        if not st.checked and st.check_failures < FIRST_CHECK_TRIES:
            # First contact since start: the record may already be right.
            return Verify() if now >= st.next_check else Wait(st.next_check)
        return Update(st.desired, st.source)
    if now >= st.next_check:
        return Verify()
    return Wait(st.next_check)


def set_desired(st: RecordState, address: str | None, source: str | None) -> bool:
    """A new address to publish; True if that changes what the record should hold."""
    if address is None or address == st.desired:
        st.source = source if address is not None else st.source
        return False
    st.desired = address
    st.source = source
    if st.last_retry is Retry.SOON:
        # The failure may have been the old uplink's; the new address deserves a try now.
        st.next_retry = None
    return True


def succeeded(st: RecordState, address: str, result: UpdateResult, now: float, *, wall: float,
              timing: Timing) -> None:
    """Fold a successful update in."""
    st.sent = address
    st.published = result.address
    st.confirmed = False
    st.failures = 0
    st.last_retry = None
    st.next_retry = None
    st.last_error = None
    st.check_error = None  # an older check's failure is no longer the news
    st.checked = True
    st.last_success = wall
    st.updates += 1
    st.next_check = now + timing.check_interval


def failed(st: RecordState, err: DyndnsError, now: float, timing: Timing,
           rng: random.Random) -> float | None:
    """Fold a failed update in; the delay before the next try (None: blocked)."""
    st.last_error = str(err)
    st.last_retry = err.retry
    if err.retry is Retry.NEVER:
        st.blocked = str(err)
        st.next_retry = None
        return None
    st.failures += 1
    delay = backoff(st.failures, timing, rng)
    if err.retry is Retry.LATER:
        delay = max(delay, err.retry_after)
    st.next_retry = now + delay
    return delay


def verified(st: RecordState, answer: frozenset[str], now: float, wall: float,
             timing: Timing) -> str | None:
    """Fold a check in; returns why a repair is needed, or None."""
    st.check_error = None
    st.check_failures = 0
    if st.published is None and st.desired is None:
        return None  # nothing to compare with: not a contact
    st.next_check = now + timing.check_interval
    if st.published is None:
        # Nothing published since start: compare with the address we want (the drift check
        # runs before our first update too). The record may hold it already (a restart), or
        # what the provider published for it last time (route53-lambda behind NAT).
        st.checked = True
        held = {st.desired}
        if st.prior is not None and st.prior[0] == st.desired:
            held = {st.desired, st.prior[1]}
        if len(answer) == 1 and answer <= held:
            st.sent, st.published = st.desired, next(iter(answer))
            st.confirmed = True
            st.last_confirmed = wall
        return None
    st.checked = True
    if answer == {st.published}:
        st.confirmed = True
        st.last_confirmed = wall
        return None
    st.confirmed = False
    st.sent = None  # forces an update of `desired`
    held_text = ", ".join(sorted(answer)) or "nothing"
    return f"the authoritative servers answer {held_text}, not {st.published}"


def check_failed(st: RecordState, err: DyndnsError, now: float, timing: Timing,
                 rng: random.Random) -> None:
    """A check got no answer: do not touch the record; before the first contact try again
    soon (with backoff), else at the next periodic check."""
    st.check_error = str(err)
    st.check_failures += 1
    if not st.checked and st.desired != st.sent:
        st.next_check = now + backoff(st.check_failures, timing, rng)
    else:
        st.next_check = now + timing.check_interval


def hold(st: RecordState, now: float, wall: float) -> dict[str, Any]:
    """What must survive a restart: a block, or the provider's not-before time; and what was
    sent and published last, so a restart that finds it in place sends nothing."""
    if st.blocked is not None:
        return {"blocked": st.blocked}
    out: dict[str, Any] = {}
    if st.sent is not None and st.published is not None:
        out.update(sent=st.sent, published=st.published)
    elif st.prior is not None:
        out.update(sent=st.prior[0], published=st.prior[1])
    if st.last_retry is Retry.LATER and st.next_retry is not None:
        out.update(not_before=round(wall + (st.next_retry - now)), error=st.last_error)
    return out


def restore(st: RecordState, saved: dict[str, Any], now: float, wall: float) -> None:
    """Take a saved hold back (the config is unchanged since it was written)."""
    if isinstance(saved.get("blocked"), str):
        st.blocked = st.last_error = saved["blocked"]
        st.last_retry = Retry.NEVER
    elif isinstance(saved.get("not_before"), int | float) and saved["not_before"] > wall:
        st.next_retry = now + (saved["not_before"] - wall)
        st.last_retry = Retry.LATER
        st.last_error = str(saved.get("error") or "the provider asked us to wait")
    if isinstance(saved.get("sent"), str) and isinstance(saved.get("published"), str):
        st.prior = (saved["sent"], saved["published"])


def record_view(st: RecordState, now: float, wall: float) -> dict[str, Any]:
    """The JSON-ready status of one record."""
    if st.blocked:
        state = "blocked"
    elif st.in_flight:
        state = "updating"
    elif st.next_retry is not None:
        state = "retrying"
    elif st.desired is None:
        state = "waiting"
    elif st.desired == st.sent:
        state = "ok"
    else:
        state = "pending"
    return {
        "record": str(st.record),
        "state": state,
        "address": st.desired,
        "published": st.published,
        "confirmed": st.confirmed,
        "last_success": st.last_success,
        "last_confirmed": st.last_confirmed,
        "last_error": st.blocked or st.last_error or st.check_error,
        "next_retry": None if st.next_retry is None else wall + (st.next_retry - now),
        "attempts": st.attempts,
        "updates": st.updates,
    }


@dataclass
class Updater:
    """Runs the records' workers on the loop; providers and verifiers run in threads."""

    provider: Provider
    verifier: Verifier
    records: Iterable[Record]
    timing: Timing = field(default_factory=Timing)
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    on_change: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.states = {r.rdtype: RecordState(r) for r in self.records}
        self._wake = {t: asyncio.Event() for t in self.states}

    def set_address(self, rdtype: str, address: str | None, source: str | None,
                    why: str = "address changed") -> None:
        """Publish `address` under the record of type `rdtype` (ignored if not configured)."""
        st = self.states.get(rdtype)
        if st is None:
            return
        before = st.desired
        if set_desired(st, address, source):
            LOG.info("dyndns: %s should now be %s (%s; was %s)", st.record, address, why,
                     before or "unknown")
            self._wake[rdtype].set()
            self._changed()

    def reset(self) -> None:
        """The config changed: forget blocks and backoff, try again."""
        for t, st in self.states.items():
            st.blocked = None
            st.failures = 0
            st.next_retry = None
            st.last_retry = None
            self._wake[t].set()

    def holds(self) -> dict[str, dict[str, Any]]:
        """Every record's hold (see `hold`), for the state file."""
        now, wall = self.clock(), self.wall()
        return {t: h for t, st in self.states.items() if (h := hold(st, now, wall))}

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        """Take holds saved before a restart back."""
        now, wall = self.clock(), self.wall()
        for t, st in self.states.items():
            if isinstance(saved.get(t), dict):
                restore(st, saved[t], now, wall)
                if st.last_error is not None:
                    LOG.info("dyndns: %s still held from before the restart: %s", st.record,
                             st.last_error)

    def view(self) -> list[dict[str, Any]]:
        """Every record's status."""
        now, wall = self.clock(), self.wall()
        return [record_view(st, now, wall) for st in self.states.values()]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def run(self) -> None:
        """Run every record's worker until cancelled."""
        await asyncio.gather(*(self._worker(st) for st in self.states.values()))

    async def _worker(self, st: RecordState) -> None:
        wake = self._wake[st.record.rdtype]
        while True:
            wake.clear()
            now = self.clock()
            action = decide(st, now)
            if isinstance(action, Wait):
                timeout = None if action.until is None else max(0.0, action.until - now)
                with contextlib.suppress(TimeoutError):
                    await within(wake.wait(), timeout)
            elif isinstance(action, Verify):
                await self._verify(st)
            else:
                await self._update(st, action)
            self._changed()

    async def _verify(self, st: RecordState) -> None:
        try:
            answer = await asyncio.to_thread(self.verifier.lookup, st.record)
        except DyndnsError as e:
            check_failed(st, e, self.clock(), self.timing, self.rng)
            if not st.checked and st.check_failures >= FIRST_CHECK_TRIES:
                LOG.warning("dyndns: cannot check %s: %s; updating without knowing what it "
                            "holds", st.record, e.reason)
            else:
                LOG.warning("dyndns: cannot check %s: %s", st.record, e.reason)
            return
        first = st.published is None
        drift = verified(st, answer, self.clock(), self.wall(), self.timing)
        if drift:
            LOG.warning("dyndns: %s drifted: %s; repairing", st.record, drift)
        elif first and st.confirmed:
            LOG.info("dyndns: %s already holds %s; no update needed", st.record, st.published)
        elif first and st.desired is not None:
            LOG.info("dyndns: %s holds %s; updating it to %s", st.record,
                     ", ".join(sorted(answer)) or "nothing", st.desired)
        elif st.confirmed:
            LOG.debug("dyndns: %s confirmed at %s", st.record, st.published)

    async def _update(self, st: RecordState, action: Update) -> None:
        st.attempts += 1
        st.in_flight = True
        self._changed()
        LOG.info("dyndns: updating %s to %s via %s (attempt %d)", st.record, action.address,
                 self.provider.kind, st.failures + 1)
        try:
            result = await asyncio.to_thread(self.provider.update, st.record, action.address,
                                             action.source)
        except DyndnsError as e:
            delay = failed(st, e, self.clock(), self.timing, self.rng)
            if delay is None:
                LOG.error("dyndns: %s; not retrying until the config changes", e)
            else:
                LOG.warning("dyndns: %s; retrying in %.1fs", e, delay)
            return
        finally:
            st.in_flight = False
        succeeded(st, action.address, result, self.clock(), wall=self.wall(), timing=self.timing)
        LOG.info("dyndns: %s now %s (%s)", st.record, result.address,
                 "updated" if result.changed else "already held it")
