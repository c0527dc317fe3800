"""`failberry boot-test --hang-kernel`: after the usual checks, hang the guest's kernel and
time the hardware watchdog's reset.

The image's systemd drives the SoC watchdog (RuntimeWatchdogSec= in
/etc/systemd/system.conf.d/90-failberry-watchdog.conf); under QEMU virt it is the i6300esb PCI
watchdog. Over SSH the guest is told to panic and stay panicked (`kernel.panic=0`, SysRq `c`):
only the watchdog can bring it back, and the console shows the second boot. This runs inside
the QEMU guest only, never on the machine running boot-test."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from failberry.image.runner import Runner

LOG = logging.getLogger(__name__)

# The guest's watchdog as the kernel names it, its timeout, and whether systemd opened it.
WATCHDOG_FACTS = ("d=/sys/class/watchdog/watchdog0; "
                  "if [ -r $d/identity ]; then "
                  "echo \"$(cat $d/identity)|$(cat $d/timeout 2>/dev/null)|"
                  "$(cat $d/state 2>/dev/null)\"; else echo none; fi")
# Panic, and stay panicked: with kernel.panic=0 the kernel never reboots by itself.
HANG = "sudo -n sh -c 'sysctl -q kernel.panic=0; echo c > /proc/sysrq-trigger'"
PANIC = re.compile(r"Kernel panic - not syncing|sysrq: Trigger a crash")
SECOND_BOOT = re.compile(r"Booting Linux on physical CPU")
DEFAULT_LIMIT = 120.0


@dataclass(frozen=True)
class HangResult:
    """What the hang showed: the watchdog, and seconds from the panic to the second boot."""

    device: str = ""  # "i6300ESB timer, timeout 15 s, active"
    reset_after: float | None = None
    failure: str = ""

    def line(self) -> str:
        """One line for the boot-test report."""
        if self.reset_after is not None:
            return (f"hang-kernel: watchdog reset after {self.reset_after:.1f} s "
                    f"({self.device})")
        return f"hang-kernel: {self.failure}"


def parse_facts(text: str) -> str:
    """'identity|timeout|state' from the guest as words; empty when it has no watchdog."""
    line = text.strip().splitlines()[-1] if text.strip() else "none"
    if line == "none" or "|" not in line:
        return ""
    identity, timeout, state = [*line.split("|"), "", ""][:3]
    return ", ".join(p for p in (identity.strip(),
                                 f"timeout {timeout.strip()} s" if timeout.strip() else "",
                                 state.strip()) if p)


# IPv6 addresses on the guest's interfaces other than loopback (the image's sysctls give none
# unless [dyndns] ipv6 asks for the uplinks'); and whether systemd-timesyncd keeps the clock.
GUEST_FACTS = ('echo "ipv6=$(ip -6 -o addr show | grep -v ": lo " | tr -s " " '
               '| cut -d" " -f2,4 | paste -sd, -)"; '
               'echo "timesyncd=$(systemctl is-active systemd-timesyncd)"; '
               'echo "disable_ipv6=default:$(cat /proc/sys/net/ipv6/conf/default/disable_ipv6)'
               ' eth0:$(cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6)"')


def guest_facts(runner: Runner, ssh: Sequence[str]) -> dict[str, str]:
    """`name=value` lines the guest answers GUEST_FACTS with."""
    res = runner.run([*ssh, GUEST_FACTS], capture=True, check=False, timeout=60)
    out = {}
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name.strip()] = value.strip()
    return out


def find_after(lines: Sequence[str], start: int, pattern: re.Pattern[str]) -> int | None:
    """The index of the first line at or after `start` that matches."""
    for i in range(start, len(lines)):
        if pattern.search(lines[i]):
            return i
    return None


def hang_kernel(runner: Runner, qemu: subprocess.Popen[bytes], console: list[str],
                ssh: Sequence[str], *, limit: float = DEFAULT_LIMIT,
                clock: Callable[[], float] = time.monotonic, facts: str = WATCHDOG_FACTS,
                hang: str = HANG) -> HangResult:
    """Check the guest has a watchdog systemd opened, hang its kernel, and wait up to `limit`
    seconds after the panic for the console's second boot. `ssh` is the command that logs in
    (the remote command is appended); `console` the lines QEMU printed so far, still growing.
    `facts` and `hang` are the remote commands (tests give harmless stand-ins)."""
    res = runner.run([*ssh, facts], capture=True, check=False, timeout=60)
    device = parse_facts(res.stdout.decode("utf-8", "replace"))
    if res.returncode != 0:
        return HangResult(failure=f"cannot ask the guest for its watchdog: "
                                  f"{res.stderr_tail[-200:]}")
    if not device:
        return HangResult(failure="the guest has no /sys/class/watchdog/watchdog0: no watchdog "
                                  "driver bound, or QEMU gave it no watchdog device")
    if "inactive" in device:
        return HangResult(device, failure=f"the guest's watchdog is not running ({device}): "
                                          "systemd did not open it (RuntimeWatchdogSec=)")
    LOG.info("guest watchdog: %s; hanging the guest kernel", device)
    mark = len(console)
    trigger = runner.spawn([*ssh, hang], on_line=lambda _line: None)
    sent = clock()
    try:
        panicked: float | None = None
        while True:
            now = clock()
            if panicked is None and find_after(console, mark, PANIC) is not None:
                panicked = now
                LOG.info("guest kernel panicked %.1f s after the SysRq; waiting for the "
                         "watchdog", now - sent)
            since = panicked if panicked is not None else sent
            if find_after(console, mark, SECOND_BOOT) is not None:
                return HangResult(device, reset_after=now - since)
            if qemu.poll() is not None:
                return HangResult(device, failure=f"QEMU exited with status {qemu.returncode} "
                                                  "instead of resetting the guest")
            if now - since > limit:
                what = "after the panic" if panicked is not None else (
                    "after the SysRq (no panic on the console)")
                return HangResult(device, failure=f"no watchdog reset within {limit:g} s "
                                                  f"{what}")
            time.sleep(0.2)
    finally:
        Runner.stop(trigger, grace=2.0)
