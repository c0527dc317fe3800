"""What `boot-test` reads from inside the booted guest over SSH once the checks have passed:
the watchdog device the kernel found, systemd's critical chain to failberryd, the time from
failberryd's start to the first /health answer, what the idle system writes to its disk
(extrapolated to a day), and the output of the user's `--exec` commands."""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LOG = logging.getLogger(__name__)

DAY = 86400.0
SECTOR = 512
# The block devices a Pi or QEMU boots from (virtio, SD card, USB disk); not loop or zram.
DISKS = "/sys/block/vd* /sys/block/mmcblk[0-9] /sys/block/mmcblk[0-9][0-9] /sys/block/sd*"
# One shell script, sections marked by "@@name" lines; the uptime is read last, so that the
# host's clock right after ssh returns maps guest time to host time.
FACTS = """\
echo @@watchdog
for w in /sys/class/watchdog/watchdog*; do
    if [ -r "$w/identity" ]; then echo "${w##*/}: $(cat "$w/identity")"; fi
done
echo @@swap
tail -n +2 /proc/swaps
echo @@root
findmnt -n -o OPTIONS /
echo @@chain
systemd-analyze critical-chain --no-pager failberryd.service 2>&1 | tail -n +3
echo @@start
systemctl show -p ExecMainStartTimestampMonotonic --value failberryd.service
echo @@ready
systemctl show -p ActiveEnterTimestampMonotonic --value failberryd.service
echo @@uptime
cut -d' ' -f1 /proc/uptime
"""


def writes_script(window: float) -> str:
    """Sectors written by every disk, `window` seconds apart (one session: the login's own
    writes come before the first reading)."""
    read = (f"for d in {DISKS}; do if [ -r $d/stat ]; then echo ${{d##*/}} $(cat $d/stat); "
            "fi; done")
    return f"echo @@before; {read}; sleep {window:g}; echo @@after; {read}"


def short(cmd: str, width: int = 60) -> str:
    """A command for a report line: its first non-blank line, cut to `width`."""
    lines = [line.strip() for line in cmd.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    more = len(lines) > 1 or len(first) > width
    return repr(first[:width] + ("..." if more else ""))


def sections(text: str) -> dict[str, list[str]]:
    """The script's output split at its "@@name" lines."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = out.setdefault(line[2:].strip(), [])
        elif current is not None and line.strip():
            current.append(line.rstrip())
    return out


def sectors_written(lines: list[str]) -> dict[str, int]:
    """Per disk, the sectors written (/sys/block/DEV/stat's 7th field)."""
    found = {}
    for line in lines:
        words = line.split()
        if len(words) >= 8 and words[7].isdigit():
            found[words[0]] = int(words[7])
    return found


@dataclass
class GuestReport:
    """Facts from inside the guest."""

    watchdog: str = "none"
    swap: list[str] = field(default_factory=list)
    root_options: str = ""
    chain: list[str] = field(default_factory=list)
    start_to_health: float | None = None
    start_to_ready: float | None = None  # READY=1: every part built, /health says their state
    written: int | None = None
    window: float = 0.0
    execs: list[tuple[str, int, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def per_day(self) -> float | None:
        """Bytes written per idle day, extrapolated from the window."""
        if self.written is None or self.window <= 0:
            return None
        return self.written * DAY / self.window

    def render(self) -> list[str]:
        """The report's lines (indented like the rest of boot-test's report)."""
        from failberry.units import human_size

        lines = [f"  watchdog: {self.watchdog}",
                 f"  swap: {'; '.join(self.swap) if self.swap else 'none'}",
                 f"  root mount: {self.root_options or '?'}"]
        if self.start_to_health is not None:
            lines.append(f"  failberryd start -> /health: {self.start_to_health:.1f}s")
        if self.start_to_ready is not None:
            lines.append(f"  failberryd start -> READY (parts running): "
                         f"{self.start_to_ready:.1f}s")
        if self.per_day is not None and self.written is not None:
            lines.append(f"  idle writes: {human_size(self.written)} in {self.window:g}s, "
                         f"{human_size(int(self.per_day))}/day")
        if self.chain:
            lines.append("  critical chain (systemd-analyze critical-chain failberryd.service):")
            lines += [f"    {line}" for line in self.chain[:30]]
        for cmd, code, output in self.execs:
            lines.append(f"  exec {short(cmd)} (exit {code}):")
            lines += [f"    {line}" for line in output.splitlines()[-60:]]
        lines += [f"  problem: {p}" for p in self.problems]
        return lines


def apply_facts(report: GuestReport, text: str, *, host_health: float | None,
                host_after: float) -> None:
    """Fill the report from the FACTS script's output. `host_health` is when /health first
    answered and `host_after` when the script returned, both on the host's clock."""
    parts = sections(text)
    watchdogs = parts.get("watchdog", [])
    report.watchdog = "; ".join(watchdogs) if watchdogs else "none"
    report.swap = parts.get("swap", [])
    report.root_options = " ".join(parts.get("root", []))
    report.chain = parts.get("chain", [])
    try:
        start = int(parts["start"][0]) / 1e6
        uptime = float(parts["uptime"][0])
    except (KeyError, IndexError, ValueError):
        report.problems.append("no failberryd start time or uptime from the guest")
        return
    if host_health is not None and start > 0:
        report.start_to_health = uptime - (host_after - host_health) - start
    ready = parts.get("ready", [])
    if ready and ready[0].isdigit() and (at := int(ready[0]) / 1e6) >= start > 0:
        report.start_to_ready = at - start


def apply_writes(report: GuestReport, text: str, window: float) -> None:
    """Fill the idle-write figures from `writes_script`'s output."""
    parts = sections(text)
    before = sectors_written(parts.get("before", []))
    after = sectors_written(parts.get("after", []))
    if not before or before.keys() != after.keys():
        report.problems.append("no disk write counters from the guest")
        return
    report.written = sum(after[d] - before[d] for d in before) * SECTOR
    report.window = window


# (argv tail, timeout) -> (exit status, stdout, stderr tail): ssh into the guest.
Ssh = Callable[[list[str], float], tuple[int, str, str]]


def collect(ssh: Ssh, *, host_health: float | None, idle_window: float,
            execs: tuple[str, ...], clock: Callable[[], float] = time.monotonic) -> GuestReport:
    """Ask the guest; what cannot be read is a problem line, never an exception."""
    report = GuestReport()
    code, out, err = ssh(["sh", "-c", shlex.quote(FACTS)], 120)
    if code != 0:
        report.problems.append(f"guest facts: exit {code}: {err[-200:]}")
    apply_facts(report, out, host_health=host_health, host_after=clock())
    if idle_window > 0:
        LOG.info("measuring idle disk writes for %gs", idle_window)
        code, out, err = ssh(["sh", "-c", shlex.quote(writes_script(idle_window))],
                             idle_window + 120)
        if code == 0:
            apply_writes(report, out, idle_window)
        else:
            report.problems.append(f"idle writes: exit {code}: {err[-200:]}")
    for cmd in execs:
        code, out, err = ssh([cmd], 900)
        report.execs.append((cmd, code, (out + err).strip()))
    return report
