"""The watcher: probes each mount with a write + fsync in a pre-forked child, tracks tasks in D
state and the I/O pressure, and when a probe is not done within the threshold, alerts (syslog
over UDP, kernel log, journal), waits the grace period and reboots through the `Rebooter` seam.

The hot path (the loop below) touches no disk: its memory is locked (mlockall), every module it
uses is imported at start, the alert sinks are opened and resolved at start, it reads only
/proc, and it waits on pipes with poll(2), never on a child that may be stuck."""

from __future__ import annotations

import logging
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from failberry.config import HostguardConfig
from failberry.hostguard.alert import (
    SEVERITY_CRIT,
    SEVERITY_NOTICE,
    SEVERITY_WARNING,
    Alerter,
    AlertError,
    Kmsg,
    Sink,
    UdpSyslog,
)
from failberry.hostguard.dstate import DStateScanner, StuckTask, read_pressure
from failberry.hostguard.probe import ProbeResult, ProbeWorker
from failberry.hostguard.reboot import KernelReboot, Libc, Rebooter
from failberry.sdnotify import Notifier, watchdog_interval

LOG = logging.getLogger(__name__)

MAX_TASKS_IN_ALERT = 10


@dataclass
class MountState:
    """One probed mount: its child, the probe in flight, and what we last concluded."""

    mount: str
    worker: ProbeWorker
    next_probe: float = 0.0
    started: float | None = None  # when the probe in flight was asked for
    hung: bool = False
    error: str = ""
    old_workers: list[ProbeWorker] = field(default_factory=list)


def mount_points(mountinfo: str) -> set[str]:
    """The mount points in a /proc/self/mountinfo text."""
    out = set()
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) > 4:
            out.add(parts[4].replace("\\040", " ").replace("\\011", "\t"))
    return out


class Watcher:
    """The daemon's state and loop; every side effect goes through a constructor argument."""

    def __init__(self, cfg: HostguardConfig, *, alerter: Alerter, rebooter: Rebooter,
                 dry_run: bool = False,
                 scanner: DStateScanner | None = None,
                 pressure: Path = Path("/proc/pressure/io"),
                 notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.alerter = alerter
        self.rebooter = rebooter
        self.dry_run = dry_run
        self.scanner = scanner or DStateScanner()
        self.pressure = pressure
        self.notifier = notifier or Notifier("")
        self.clock = clock
        self.mounts = [MountState(m, ProbeWorker(m)) for m in cfg.mounts]
        self.reboot_requested = False
        self.next_scan = 0.0
        self.warned_tasks: set[tuple[int, float]] = set()
        self.watchdog = watchdog_interval()
        self.next_watchdog = 0.0
        self._stop = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Fork the probe children and tell systemd we are ready."""
        try:
            with open("/proc/self/mountinfo", encoding="utf-8") as f:
                known = mount_points(f.read())
        except OSError:
            known = set()
        for m in self.mounts:
            if known and m.mount not in known:
                LOG.warning("%s is not a mount point; probing the file system it is on", m.mount)
            m.worker.spawn()
        LOG.info("watching %s: probe every %gs, hung after %gs, grace %gs%s",
                 ", ".join(m.mount for m in self.mounts), self.cfg.probe_interval,
                 self.cfg.threshold, self.cfg.grace, " (dry run: never reboot)"
                 if self.dry_run else "")
        self.notifier.notify("READY=1", f"STATUS=watching {len(self.mounts)} mounts")

    def stop(self, *_: object) -> None:
        """Ask the loop to end (signal-handler safe)."""
        self._stop = True

    def close(self) -> None:
        """Ask the children to quit, without waiting for any of them and without a signal: a
        child waiting on a hung mount quits once the mount answers (see `probe`)."""
        for m in self.mounts:
            if m.started is not None:
                LOG.info("leaving the probe child %d of %s to quit once its probe is done",
                         m.worker.pid, m.mount)
            m.worker.abandon()
            for old in m.old_workers:
                old.reap()
        self.notifier.notify("STOPPING=1")

    def run(self) -> None:
        """Loop until `stop()`."""
        while not self._stop:
            timeout = self.step(self.clock())
            self.wait(timeout)

    # -- one turn of the loop -------------------------------------------------------------

    def step(self, now: float) -> float:
        """Start due probes, judge late ones, scan tasks; seconds until the next thing."""
        if self.watchdog is not None and now >= self.next_watchdog:
            self.notifier.notify("WATCHDOG=1")
            self.next_watchdog = now + self.watchdog
        for m in self.mounts:
            if m.started is None and now >= m.next_probe:
                if not m.worker.go():
                    self.respawn(m, "probe child is gone")
                    m.worker.go()
                m.started = now
            elif m.started is not None and not m.hung and now - m.started >= self.cfg.threshold:
                if self.answer_waiting(m):
                    # We were late, not the mount: the answer is in the pipe (the watcher was
                    # starved of CPU or the VM paused). Read it instead of rebooting.
                    self.wait(0)
                else:
                    self.hung(m, now)
            for old in list(m.old_workers):
                if old.reap():
                    m.old_workers.remove(old)
        if now >= self.next_scan:
            self.scan(now)
            self.next_scan = now + self.cfg.probe_interval
        deadlines = [self.next_scan]
        for m in self.mounts:
            if m.started is None:
                deadlines.append(m.next_probe)
            elif not m.hung:
                deadlines.append(m.started + self.cfg.threshold)
        if self.watchdog is not None:
            deadlines.append(self.next_watchdog)
        return max(0.0, min(deadlines) - now)

    @staticmethod
    def answer_waiting(m: MountState) -> bool:
        """Whether the probe child's answer sits unread in the pipe."""
        if m.worker.reply_r < 0:
            return False
        poller = select.poll()
        poller.register(m.worker.reply_r, select.POLLIN)
        return bool(poller.poll(0))

    def wait(self, timeout: float) -> None:
        """Sleep until a probe answers or `timeout` passes; handle the answers."""
        poller = select.poll()
        by_fd = {}
        for m in self.mounts:
            if m.started is not None and m.worker.reply_r >= 0:
                poller.register(m.worker.reply_r, select.POLLIN)
                by_fd[m.worker.reply_r] = m
        try:
            events = poller.poll(timeout * 1000)
        except InterruptedError:
            return
        now = self.clock()
        for fd, _ in events:
            m = by_fd[fd]
            result = m.worker.read_reply()
            if result is None:
                self.respawn(m, "probe child exited")
                m.started = None
                m.next_probe = now
                continue
            self.answered(m, result, now)

    def answered(self, m: MountState, result: ProbeResult, now: float) -> None:
        """A probe finished: note recoveries and errors, schedule the next one."""
        took = now - (m.started if m.started is not None else now)
        m.started = None
        m.next_probe = now + self.cfg.probe_interval
        if m.hung:
            m.hung = False
            LOG.info("%s answered again after %.1fs", m.mount, took)
            self.alerter.send(SEVERITY_NOTICE, "RECOVERED",
                              f"mount {m.mount} answered again after {took:.1f}s",
                              [("mount", m.mount)])
        if not result.ok and result.error != m.error:
            # An error is not a hang: the kernel answered. Tell someone, do not reboot.
            self.alerter.send(SEVERITY_WARNING, "PROBE-ERROR",
                              f"write probe on {m.mount} failed: {result.error}",
                              [("mount", m.mount)])
        elif result.ok and m.error:
            LOG.info("write probe on %s works again", m.mount)
        m.error = "" if result.ok else result.error

    def respawn(self, m: MountState, why: str) -> None:
        """Replace a mount's probe child."""
        LOG.info("new probe child for %s: %s", m.mount, why)
        m.worker.abandon()
        if m.worker.pid:
            m.old_workers.append(m.worker)
        m.worker = ProbeWorker(m.mount)
        m.worker.spawn()

    def scan(self, now: float) -> list[StuckTask]:
        """Scan D-state tasks; warn once about each that stays longer than the threshold."""
        tasks = self.scanner.scan(now)
        for t in tasks:
            key = (t.pid, t.since)
            if now - t.since >= self.cfg.threshold and key not in self.warned_tasks:
                self.warned_tasks.add(key)
                LOG.warning("task in D state for %.0fs: %s", now - t.since, t.describe(now))
        current = {(t.pid, t.since) for t in tasks}
        self.warned_tasks &= current
        return tasks

    # -- the hang -----------------------------------------------------------------------------

    def report(self, m: MountState, now: float) -> str:
        """The alert text: the mount, the probe child, the I/O pressure, the stuck tasks."""
        started = m.started if m.started is not None else now
        tasks = self.scan(now)
        child = self.scanner.task(m.worker.pid) if m.worker.pid else None
        child_text = (f"probe pid {m.worker.pid} ({child[2]}) state {child[0]} "
                      f"wchan={child[1] or '?'}" if child else f"probe pid {m.worker.pid}")
        parts = [f"mount {m.mount} hung: write+fsync not done after {now - started:.1f}s "
                 f"(threshold {self.cfg.threshold:g}s; {child_text})"]
        pressure = read_pressure(self.pressure)
        if pressure:
            parts.append(f"io pressure {pressure}")
        shown = [t.describe(now) for t in tasks[:MAX_TASKS_IN_ALERT]]
        more = len(tasks) - len(shown)
        parts.append(f"{len(tasks)} tasks in D state" + (": " + "; ".join(shown) if shown
                                                          else ""))
        if more:
            parts.append(f"and {more} more")
        return " | ".join(parts)

    def hung(self, m: MountState, now: float) -> None:
        """Alert, wait the grace period, reboot (unless a dry run)."""
        m.hung = True
        text = self.report(m, now)
        act = "dry run, not rebooting" if self.dry_run else f"rebooting in {self.cfg.grace:g}s"
        self.notifier.notify(f"STATUS=hung: {m.mount}")
        self.alerter.send(SEVERITY_CRIT, "HUNG", f"{text} | {act}",
                          [("mount", m.mount), ("action", "none" if self.dry_run else "reboot")])
        if self.dry_run or self.reboot_requested:
            return
        self.sleep(self.cfg.grace)
        self.reboot_requested = True
        self.rebooter.reboot(f"mount {m.mount} hung for {self.clock() - (m.started or now):.1f}s")

    def sleep(self, seconds: float) -> None:
        """Sleep, still feeding systemd's watchdog."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            time.sleep(min(left, 0.5))
            if self.watchdog is not None:
                self.notifier.notify("WATCHDOG=1")


def main(cfg: HostguardConfig, *, dry_run: bool = False, rebooter: Rebooter | None = None,
         kmsg: str | None = "/dev/kmsg", extra_sinks: Sequence[Sink] = ()) -> int:
    """`failberry hostguard watch`: lock memory, open the sinks, watch until SIGTERM."""
    libc = Libc()
    err = libc.mlockall()
    if err:
        LOG.warning("mlockall failed (errno %d): the watcher may be paged out under memory "
                    "pressure; give it CAP_IPC_LOCK / LimitMEMLOCK=infinity", err)
    sinks: list[Sink] = list(extra_sinks)
    if cfg.syslog_target:
        sinks.append(UdpSyslog(cfg.syslog_target))
    if kmsg:
        try:
            sinks.append(Kmsg(kmsg))
        except AlertError as e:
            LOG.warning("no kernel log line: %s", e)
    watcher = Watcher(cfg, alerter=Alerter(sinks), rebooter=rebooter or KernelReboot(libc),
                      dry_run=dry_run, notifier=Notifier())
    handler: Callable[[int, FrameType | None], None] = watcher.stop
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    watcher.start()
    watcher.alerter.send(SEVERITY_NOTICE, "START", f"watching {', '.join(cfg.mounts)}: hung "
                         f"after {cfg.threshold:g}s{' (dry run)' if dry_run else ''}")
    try:
        watcher.run()
    finally:
        watcher.close()
    LOG.info("stopped")
    return 0
