"""The kernel log, record by record: `/dev/kmsg` on the Pi, or a pipe or a file a test writes.

A `/dev/kmsg` record is `PRIO,SEQ,TIMESTAMP_US,FLAGS[,...];MESSAGE` followed by optional
continuation lines that start with a space (`KEY=value` metadata; ignored here), see the
kernel's Documentation/ABI/testing/dev-kmsg. The timestamp counts microseconds on the printk
clock, which starts at boot like CLOCK_MONOTONIC, so it lines up with `time.monotonic()`."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

LOG = logging.getLogger(__name__)

DEV_KMSG = Path("/dev/kmsg")
RECORD_MAX = 8192  # one read() of /dev/kmsg returns one record; shorter buffers get EINVAL
DRAIN_MAX = 10_000  # records per read_new(): a log storm must not starve the loop


@dataclass(frozen=True)
class Record:
    """One kernel log record."""

    level: int  # 0 emerg .. 7 debug
    seq: int | None
    at: float | None  # seconds on the printk clock (since boot); None if the line had none
    text: str


def parse(line: str) -> Record | None:
    """A record from one `/dev/kmsg` line; a line without the header is taken whole."""
    line = line.rstrip("\n")
    if not line or line[0] in " \t":  # continuation (dictionary) lines
        return None
    head, sep, text = line.partition(";")
    if sep:
        fields = head.split(",")
        try:
            prio = int(fields[0])
            seq = int(fields[1]) if len(fields) > 1 else None
            at = int(fields[2]) / 1e6 if len(fields) > 2 else None
        except ValueError:
            pass
        else:
            return Record(prio & 7, seq, at, text)
    return Record(6, None, None, line)


class KmsgSource(Protocol):
    """Where kernel log records come from."""

    def read_new(self) -> list[Record]:
        """Every record that arrived since the last call (the first call: the history)."""

    def close(self) -> None:
        """Let go of the file."""

    def fileno(self) -> int | None:
        """A descriptor that polls readable when a record arrives; None: poll by interval."""


class _FdSource:
    """A source read from one descriptor, which poll(2) says readable when a record (or a
    line) arrives."""

    _fd: int | None

    def close(self) -> None:
        """Close the descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def fileno(self) -> int | None:
        """The descriptor to poll; None once closed."""
        return self._fd


class DevKmsg(_FdSource):
    """`/dev/kmsg`, opened non-blocking: each read() returns one record, EAGAIN the end.

    The first call returns what the ring buffer still holds since boot, so counts survive a
    restart of the supervisor. EPIPE means records were overwritten before we read them: the
    next read continues with the oldest one left, and `lost` counts the gaps."""

    def __init__(self, path: Path = DEV_KMSG,
                 read: Callable[[int, int], bytes] = os.read) -> None:
        self.path = path
        self._read = read
        self.lost = 0
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def read_new(self) -> list[Record]:
        """Drain the records available now."""
        out: list[Record] = []
        fd = self._fd
        if fd is None:
            return out
        while len(out) < DRAIN_MAX:
            try:
                raw = self._read(fd, RECORD_MAX)
            except BlockingIOError:
                break
            except BrokenPipeError:
                self.lost += 1
                LOG.debug("kernel log records were overwritten before they were read")
                continue
            except InterruptedError:
                continue
            if not raw:
                break
            first = raw.decode("utf-8", "replace").split("\n", 1)[0]
            rec = parse(first)
            if rec is not None:
                out.append(rec)
        return out



def _split(partial: bytes, data: bytes) -> tuple[list[Record], bytes]:
    lines = (partial + data).split(b"\n")
    rest = lines.pop()  # an unfinished last line waits for its newline
    out = []
    for raw in lines:
        rec = parse(raw.decode("utf-8", "replace"))
        if rec is not None:
            out.append(rec)
    return out, rest


class FifoKmsg(_FdSource):
    """A named pipe carrying `/dev/kmsg`-format lines (a relay, or a test). Opened read-write
    so it never reads end-of-file or polls hung up while no writer has it open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = b""
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def read_new(self) -> list[Record]:
        """The complete lines written since the last call."""
        chunks = []
        while self._fd is not None:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        out, self._partial = _split(self._partial, b"".join(chunks))
        return out



class TailFile:
    """A text file of `/dev/kmsg`-format lines, followed like `tail -F`: lines appended later
    are returned by later calls; a file that shrank or was replaced is read from its start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._ino: int | None = None
        self._partial = b""

    def read_new(self) -> list[Record]:
        """The complete lines appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != self._ino or st.st_size < self._pos:
                    self._ino, self._pos, self._partial = st.st_ino, 0, b""
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self._pos += len(data)
        out, self._partial = _split(self._partial, data)
        return out

    def close(self) -> None:
        """Nothing is held open between calls."""

    def fileno(self) -> int | None:
        """A regular file always polls readable: it is read every interval instead."""
        return None


class NoKmsg:
    """No kernel log (not readable here): never any record."""

    def read_new(self) -> list[Record]:
        """Nothing."""
        return []

    def close(self) -> None:
        """Nothing to close."""

    def fileno(self) -> int | None:
        """Nothing to wait on."""
        return None


def open_source(path: Path) -> tuple[KmsgSource, str | None]:
    """The reader for `path` (a character device: DevKmsg; else a followed file), and why
    not (None when readable). Unreadable is not an error: the fields that need it stay absent."""
    try:
        st = os.stat(path)
        if stat.S_ISCHR(st.st_mode):
            return DevKmsg(path), None
        if stat.S_ISFIFO(st.st_mode):
            return FifoKmsg(path), None
        if stat.S_ISREG(st.st_mode):
            return TailFile(path), None
        return NoKmsg(), f"{path} is not a character device, a pipe or a file"
    except FileNotFoundError:
        return NoKmsg(), f"{path} does not exist"
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            return NoKmsg(), f"{path}: permission denied (needs root or CAP_SYSLOG)"
        return NoKmsg(), f"{path}: {e.strerror or e}"
