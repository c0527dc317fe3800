"""What `failberry boot-test` saw: the console's milestones (seconds since QEMU started),
the checks' results, and the report it prints."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from failberry.image import guestreport

# The milestones are boot-test's log lines ("failberry.image.boottest: boot: kernel after 1.5s").
LOG = logging.getLogger("failberry.image.boottest")

MILESTONES = (
    ("kernel", re.compile(r"Booting Linux on physical CPU")),
    ("initramfs", re.compile(r"Run /init as init process|Loading, please wait")),
    ("root mounted", re.compile(r"EXT4-fs \(\w+\): mounted filesystem")),
    ("systemd", re.compile(r"systemd\[1\]: systemd \d+|Welcome to .*Debian")),
    # systemd launched the unit, then reported it started (its status lines ellipsize long
    # names)...
    ("failberryd starting", re.compile(r"Starting failberryd")),
    ("failberryd started", re.compile(r"Started failberryd")),
    # ...and failberryd's own "supervisor running" line, which reaches the console through
    # journald on the Pi models (systemd.journald.forward_to_console=1): the proof there
    # that the supervisor runs, not only that systemd launched it.
    ("failberryd", re.compile(r"supervisor running \(failberry ")),
    ("multi-user", re.compile(r"Reached target multi-user\.target")),
)
# A kernel line: printk's time stamp, or the first line Linux prints.
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]|Booting Linux on physical CPU")
# The guest kernel crashed: the boot will not come back from it.
KERNEL_CRASH = re.compile(r"Internal error: Oops|Kernel panic - not syncing|"
                          r"Unable to handle kernel (NULL pointer|paging request)")
CONSOLE_TAIL = 80
# On failure, the console's lines about failberry and failed units, wherever they were: a
# tail of kernel noise often hides why failberryd did not come up.
NOTABLE = re.compile(r"failberry|Failed|failed with result|timed out|Traceback|Error:")
NOTABLE_MAX = 40


@dataclass
class BootReport:
    """What happened: milestones with seconds since QEMU started, the checks, the console."""

    machine: str
    milestones: list[tuple[str, float]] = field(default_factory=list)
    health: str = ""
    health_status: int = 0
    status_output: str = ""
    status_exit: int | None = None
    password_login: str = ""
    note: str = ""
    hang: str = ""  # --hang-kernel's finding (image/hangtest.py)
    console: list[str] = field(default_factory=list)
    failure: str = ""
    guest: guestreport.GuestReport | None = None

    @property
    def ok(self) -> bool:
        """Health answered, and the admin's key logged in and ran `failberry status`."""
        return not self.failure

    def seconds_to(self, name: str) -> float | None:
        """When a milestone was reached, if it was."""
        return next((t for n, t in self.milestones if n == name), None)

    def render(self) -> str:
        """The timeline, the check results, and the console's end when something failed."""
        lines = [f"boot-test ({self.machine}): {'ok' if self.ok else 'FAILED'}"]
        lines += [f"  {t:6.1f}s  {name}" for name, t in self.milestones]
        if self.health:
            lines.append(f"  /health: HTTP {self.health_status} {self.health}")
        if self.status_exit is not None:
            lines.append(f"  failberry status (exit {self.status_exit}):")
            lines += [f"    {line}" for line in self.status_output.splitlines()[:40]]
        if self.password_login:
            lines.append(f"  password login: {self.password_login}")
        if self.note:
            lines.append(f"  note: {self.note}")
        if self.guest is not None:
            lines += self.guest.render()
        if self.hang:
            lines.append(f"  {self.hang}")
        if self.failure:
            lines.append(f"  failure: {self.failure}")
            lines.append(f"  console (last {CONSOLE_TAIL} lines):")
            lines += [f"    | {line}" for line in self.console[-CONSOLE_TAIL:]]
            # Last, so that a reader who keeps only the end of the output still sees it.
            notable = [line for line in self.console if NOTABLE.search(line)]
            lines.append(f"  console lines about failberry and failures "
                         f"({len(notable)}, last {NOTABLE_MAX} shown):")
            lines += [f"    ! {line}" for line in notable[-NOTABLE_MAX:]]
        return "\n".join(lines)

    def write_console(self, path: Path) -> None:
        """The whole serial console, one line each (`boot-test --console FILE`)."""
        path.write_text("".join(f"{line.rstrip()}\n" for line in self.console),
                        encoding="utf-8")


class Console:
    """Collects QEMU's serial output and notes when each milestone first shows."""

    def __init__(self, report: BootReport, clock: Callable[[], float] = time.monotonic) -> None:
        self.report = report
        self._clock = clock
        self._start = clock()
        self.started = self._start
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.kernel_spoke = False
        self.crash = ""

    def line(self, text: str) -> None:
        """Feed one console line."""
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
        with self._lock:
            self.report.console.append(text)
            self.kernel_spoke = self.kernel_spoke or bool(KERNEL_LINE.search(text))
            if not self.crash and KERNEL_CRASH.search(text):
                self.crash = text.strip()
            for name, pattern in MILESTONES:
                if name not in self._seen and pattern.search(text):
                    self._seen.add(name)
                    t = self._clock() - self._start
                    self.report.milestones.append((name, t))
                    LOG.info("boot: %s after %.1fs", name, t)

    def silent_for(self, limit: float) -> bool:
        """True once `limit` seconds have passed without a single kernel line."""
        return not self.kernel_spoke and self._clock() - self._start >= limit

    def mark(self, name: str) -> float:
        """Record a milestone seen from outside the console (health, SSH)."""
        with self._lock:
            t = self._clock() - self._start
            self.report.milestones.append((name, t))
        LOG.info("boot: %s after %.1fs", name, t)
        return t
