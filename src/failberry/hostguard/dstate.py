"""Tasks in uninterruptible sleep (state `D` in /proc/PID/task/TID/stat), how long each has
stayed there, what it waits on (/proc/PID/wchan), and the I/O pressure (/proc/pressure/io).

Only /proc/*/stat and wchan are read: /proc/PID/cmdline and friends take the task's mmap lock,
which a task stuck in a page fault on the hung device holds, and reading them would hang us."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatLine:
    """The fields of /proc/PID/stat we use."""

    pid: int
    comm: str
    state: str
    starttime: int  # clock ticks after boot; with pid it names a task across pid reuse


def parse_stat(text: str) -> StatLine | None:
    """Parse a stat line; `comm` may hold spaces and parentheses, so split at the last `)`."""
    head, sep, tail = text.rpartition(")")
    if not sep:
        return None
    pid_text, _, comm = head.partition(" (")
    fields = tail.split()
    # After comm: state is field 3, starttime is field 22 (proc(5)), so index 19 of the rest.
    if len(fields) < 20 or not pid_text.strip().isdigit():
        return None
    return StatLine(int(pid_text), comm, fields[0], int(fields[19]))


@dataclass(frozen=True)
class StuckTask:
    """A task in D state: who, since when (monotonic seconds), waiting on what."""

    pid: int
    tgid: int
    comm: str
    wchan: str
    since: float

    def describe(self, now: float) -> str:
        """`1234/1240 dd D 12.0s wchan=folio_wait_bit_common`."""
        who = f"{self.tgid}" if self.tgid == self.pid else f"{self.tgid}/{self.pid}"
        return f"{who} {self.comm} D {now - self.since:.1f}s wchan={self.wchan or '?'}"


class DStateScanner:
    """Scans every thread's state; remembers when each was first seen in D."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = str(proc)
        self._first_seen: dict[tuple[int, int], float] = {}

    def scan(self, now: float) -> list[StuckTask]:
        """The tasks in D now, longest first."""
        seen: dict[tuple[int, int], float] = {}
        out: list[StuckTask] = []
        for tgid_name in _listdir(self.proc):
            if not tgid_name.isdigit():
                continue
            task_dir = f"{self.proc}/{tgid_name}/task"
            for tid_name in _listdir(task_dir):
                stat = _read(f"{task_dir}/{tid_name}/stat")
                if stat is None:
                    continue
                line = parse_stat(stat)
                if line is None or line.state != "D":
                    continue
                key = (line.pid, line.starttime)
                since = self._first_seen.get(key, now)
                seen[key] = since
                wchan = _read(f"{task_dir}/{tid_name}/wchan") or ""
                out.append(StuckTask(line.pid, int(tgid_name), line.comm, wchan.strip(), since))
        self._first_seen = seen
        out.sort(key=lambda t: (t.since, t.pid))
        return out

    def task(self, pid: int) -> tuple[str, str, str] | None:
        """(state, wchan, comm) of one task, or None when it is gone."""
        stat = _read(f"{self.proc}/{pid}/stat")
        line = parse_stat(stat) if stat is not None else None
        if line is None:
            return None
        return line.state, (_read(f"{self.proc}/{pid}/wchan") or "").strip(), line.comm


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []  # the task exited between listing and reading


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_pressure(path: Path = Path("/proc/pressure/io")) -> str:
    """`some avg10=.. avg60=..; full avg10=..` in one line, or "" where PSI is absent."""
    text = _read(str(path))
    if not text:
        return ""
    parts = []
    for line in text.splitlines():
        words = line.split()
        if words:
            kept = [w for w in words[1:] if not w.startswith("total=")]
            parts.append(f"{words[0]} {' '.join(kept)}")
    return "; ".join(parts)
