"""Is the wall clock right yet? The Pi has no battery-backed clock: it boots with the time
systemd-timesyncd saved (at shutdown, hourly), hours or days behind after a power cut, until
NTP answers. TSIG (RFC 2136, a 5-minute fudge), Route53's signatures and TLS (webhooks) fail
with such a clock, so the dynamic DNS updates and the HTTPS alerts wait for the time; the
status says "waiting for time".

Never forever where the clock is good already: a kernel clock marked synchronised (any NTP
daemon), timesyncd's /run/systemd/timesync/synchronized, a real-time clock the kernel set
the time from at boot (QEMU virt's PL031, an RTC hat), or a machine nothing synchronises (not
booted with systemd-timesyncd: a workstation, a container), where waiting would never end.
And never longer than MAX_WAIT: an NTP server out of reach must not stop DNS updates for good
(the restored clock is often close enough; the providers' own errors then say if not)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised (STA_UNSYNC)
MAX_WAIT = 900.0
POLL = 2.0


@dataclass(frozen=True)
class ClockState:
    """Whether the wall clock can be trusted, and why (a few words for the log and status)."""

    good: bool
    why: str


@dataclass(frozen=True)
class ClockFacts:
    """Where the facts are read (tests point these at a temporary tree)."""

    synchronized: Path = Path("/run/systemd/timesync/synchronized")
    rtc_class: Path = Path("/sys/class/rtc")
    systemd_run: Path = Path("/run/systemd/system")  # exists when systemd is PID 1
    timesyncd: Path = Path("/lib/systemd/systemd-timesyncd")


def kernel_synchronised() -> bool | None:
    """adjtimex(2) read-only: True when the kernel's clock is marked synchronised, None when
    it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        rc = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    return None if rc < 0 else rc != TIME_ERROR


def read_clock(facts: ClockFacts = ClockFacts(),
               kernel: Callable[[], bool | None] = kernel_synchronised) -> ClockState:
    """The clock's state from the machine's facts."""
    if facts.synchronized.exists():
        return ClockState(True, "synchronised by systemd-timesyncd")
    if kernel():
        return ClockState(True, "the kernel clock is synchronised")
    try:
        rtcs = sorted(facts.rtc_class.glob("rtc*"))
    except OSError:
        rtcs = []
    for rtc in rtcs:
        try:
            if (rtc / "hctosys").read_text().strip() == "1":
                return ClockState(True, f"set from the real-time clock {rtc.name} at boot")
        except OSError:
            continue
    if not facts.systemd_run.exists() or not facts.timesyncd.exists():
        return ClockState(True, "nothing on this machine synchronises the clock")
    return ClockState(False, "the clock is not synchronised yet (no NTP answer, no RTC)")


class TimeGate:
    """Waits until the clock is good (then stays open), at most `max_wait` seconds."""

    def __init__(self, check: Callable[[], ClockState] = read_clock, *,
                 max_wait: float = MAX_WAIT, poll: float = POLL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self.max_wait = max_wait
        self.poll = poll
        self.clock = clock
        self._start = clock()
        self._open = False
        self.why = ""

    @property
    def waiting(self) -> bool:
        """True while the clock is not trusted and the wait is not over (checks again)."""
        if self._open:
            return False
        state = self.check()
        if state.good:
            self._open = True
            self.why = state.why
            LOG.info("time: %s", state.why)
        elif self.clock() - self._start >= self.max_wait:
            self._open = True
            self.why = f"{state.why}; going on after {self.max_wait:g}s"
            LOG.warning("time: %s", self.why)
        else:
            self.why = state.why
        return not self._open

    async def wait(self) -> None:
        """Return once the clock is good or the wait is over."""
        told = False
        while self.waiting:
            if not told:
                told = True
                LOG.info("time: waiting (%s) before DNS updates and HTTPS alerts", self.why)
            await asyncio.sleep(self.poll)


def open_gate() -> TimeGate:
    """A gate that never waits (tests, and parts that need no time)."""
    return TimeGate(lambda: ClockState(True, "not checked"))
