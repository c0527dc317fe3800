"""The pure bookkeeping: which kernel lines matter, under-voltage intervals, SD errors, the
warning temperature, and the per-kind rate limit. Times are monotonic seconds given by the
caller, so all of it is tested without sleeping."""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass

HOUR = 3600.0


class Line(enum.Enum):
    """What a kernel log line tells us."""

    UNDERVOLTAGE = "undervoltage"
    VOLTAGE_OK = "voltage_ok"
    SD_ERROR = "sd_error"


# raspberrypi-hwmon: "Undervoltage detected!" / "Voltage normalised"; the Raspberry Pi
# kernels' firmware driver: "Under-voltage detected! (0x00050005)" / "Voltage normalised (...)".
_UNDERVOLTAGE = re.compile(r"under-?voltage detected", re.IGNORECASE)
_VOLTAGE_OK = re.compile(r"voltage normali[sz]ed", re.IGNORECASE)
# The SD card is the mmcblk device: "mmcblk0: error -110 transferring data, ...", "I/O error,
# dev mmcblk0, sector ...", "Buffer I/O error on dev mmcblk0p2, ...", "mmcblk0: recovery
# failed!", "JBD2: Error -5 detected when updating journal superblock for mmcblk0p2-8". Host
# lines count for mmc0 only ("mmc0: timeout waiting for hardware interrupt", the classic
# failing card): the Pi device trees alias the SD slot mmc0, and on a Pi 3 or 4 mmc1 is the
# Wi-Fi chip's SDIO.
# Whole words only: the mount line's "errors=remount-ro" is no error.
_ERR = r"(\berror\b|\bfail(s|ed|ure)?\b|\btimed? ?out\b|\btimeout\b)"
_MMC_ERROR = re.compile(rf"mmcblk\d.*{_ERR}|{_ERR}.*mmcblk\d|\bmmc0: .*{_ERR}", re.IGNORECASE)
# "EXT4-fs error (device mmcblk0p2): ...", "EXT4-fs (mmcblk0p2): Remounting filesystem
# read-only", "... I/O error while writing superblock", "EXT4-fs warning (...): ...: I/O error
# 10 writing to inode", the daily "error count since last fsck", and jbd2's "Aborting journal".
# Not "Opts: errors=remount-ro" in the mount line.
_FS_ERROR = re.compile(r"EXT4-fs error|EXT4-fs.*(I/O error|Remounting filesystem read-only"
                       r"|error count since)|Aborting journal on device")


def classify(text: str) -> Line | None:
    """The meaning of one kernel log message, or None for the rest."""
    low = text.lower()
    if "voltage" not in low and "mmc" not in low and "ext4" not in low and "journal" not in low:
        return None  # most lines: skip the regular expressions
    if _UNDERVOLTAGE.search(text):
        return Line.UNDERVOLTAGE
    if _VOLTAGE_OK.search(text):
        return Line.VOLTAGE_OK
    if _MMC_ERROR.search(text) or _FS_ERROR.search(text):
        return Line.SD_ERROR
    return None


@dataclass
class _Interval:
    start: float
    end: float | None = None  # None: still under-voltage


class PowerTracker:
    """Under-voltage from any number of sources (kernel lines, the hwmon alarm, the firmware
    bits): an event is a change from normal to under-voltage, whichever source saw it first."""

    def __init__(self, window: float = HOUR) -> None:
        self.window = window
        self.events_total = 0
        self._closed_seconds = 0.0
        self._recent: deque[_Interval] = deque()  # those that ended within the window
        self._open: _Interval | None = None
        self.seen = False  # any source ever reported: the power fields exist

    @property
    def active(self) -> bool:
        """Under-voltage now."""
        return self._open is not None

    @property
    def since(self) -> float | None:
        """When the under-voltage going on now started; None when there is none."""
        return None if self._open is None else self._open.start

    def update(self, under: bool, at: float) -> bool:
        """A source says under-voltage (or not) at `at`; True when this starts an event."""
        self.seen = True
        if under:
            if self._open is not None:
                # A line read after the alarm may carry the earlier, truer start.
                self._open.start = min(self._open.start, at)
                return False
            self._open = _Interval(at)
            self.events_total += 1
            return True
        if self._open is not None:
            self._open.end = max(at, self._open.start)
            self._closed_seconds += self._open.end - self._open.start
            self._recent.append(self._open)
            self._open = None
        return False

    def _trim(self, now: float) -> None:
        while self._recent and (self._recent[0].end or 0.0) < now - self.window:
            self._recent.popleft()

    def seconds_total(self, now: float) -> float:
        """Seconds under-voltage, counting the one going on."""
        going = 0.0 if self._open is None else max(0.0, now - self._open.start)
        return self._closed_seconds + going

    def events_within(self, now: float) -> int:
        """Events that started in the window ending `now` (or are still going on)."""
        self._trim(now)
        lo = now - self.window
        n = sum(1 for i in self._recent if i.start >= lo)
        return n + (1 if self._open is not None else 0)

    def seconds_within(self, now: float) -> float:
        """Seconds under-voltage in the window ending `now`."""
        self._trim(now)
        lo = now - self.window
        spans = [*self._recent, *([self._open] if self._open is not None else [])]
        return sum(max(0.0, (now if i.end is None else i.end) - max(i.start, lo))
                   for i in spans)

    def last_seen(self, now: float) -> float | None:
        """When under-voltage was last seen: now while it lasts, else when it ended."""
        if self._open is not None:
            return now
        return self._recent[-1].end if self._recent else None


class ErrorLog:
    """SD card and file system errors from the kernel log: counts and the last line."""

    def __init__(self, window: float = HOUR) -> None:
        self.window = window
        self.total = 0
        self.last_text: str | None = None
        self.last_at: float | None = None
        self._recent: deque[float] = deque()

    def add(self, text: str, at: float) -> None:
        """One error line."""
        self.total += 1
        self.last_text, self.last_at = text, at
        self._recent.append(at)

    def within(self, now: float) -> int:
        """Errors in the window ending `now`."""
        while self._recent and self._recent[0] < now - self.window:
            self._recent.popleft()
        return len(self._recent)


class Heat:
    """Over the warning temperature, with a few degrees of hysteresis so a sensor hovering at
    the threshold does not flap."""

    def __init__(self, warning: float, hysteresis: float = 5.0) -> None:
        self.warning = warning
        self.hysteresis = hysteresis
        self.hot = False

    def update(self, celsius: float) -> bool | None:
        """The hottest zone now; True when it became hot, False when it cooled, else None."""
        if not self.hot and celsius >= self.warning:
            self.hot = True
            return True
        if self.hot and celsius < self.warning - self.hysteresis:
            self.hot = False
            return False
        return None


class RateLimit:
    """At most one alert per kind every `interval` seconds; the ones held back are counted
    and handed to the next one that passes."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, kind: str, now: float) -> int | None:
        """None: hold this one back; else how many of `kind` were held back before it."""
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)
