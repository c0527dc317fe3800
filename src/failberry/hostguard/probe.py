"""The write probe: one pre-forked child per mount that, on each request over a pipe, writes
and fsyncs a small file in that mount and answers over another pipe.

The child is forked once, at start, from the already-loaded interpreter, so a probe loads
nothing from disk but the probe file itself. When the mount hangs, the child hangs in the
kernel; the watcher only notices that no answer came in time. It never waits for the child:
it reaps with WNOHANG and walks away.

It never signals the child either, and the child takes no signal from anyone else (it blocks
every signal and leaves the terminal's session). A writer blocked on a FUSE mount waits
interruptibly, in state S, until a fatal signal arrives (fuse/dev.c, request_wait_answer); from
then on it waits uninterruptibly, in D, until the daemon answers, and with
`kernel.hung_task_panic = 1` a task in D for hung_task_timeout_secs panics the host: killing a
probe child that waits on a hung mount would cause the very panic that a `--dry-run` promises
not to. So a child is only ever asked to quit (over its pipe, or by the pipe's end of file when
the watcher is gone) and leaves by itself once the mount answers. systemd must not SIGKILL it
either: the shipped unit has `KillMode=process`.

A child left behind that way still holds the probe file's locks; a new watcher's child that
opened the same file would queue behind it in D. So each probe first takes the mount's slot,
an abstract Unix socket bound for as long as the probe runs (no file, gone with its holder),
and waits for it, interruptibly, while an earlier child still probes."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

PROBE_FILE = ".failberry-hostguard-probe"
PAYLOAD = b"failberry hostguard write probe; safe to delete\n"
GO, QUIT = b"p", b"q"
COMM, COMM_WAITING = b"hostguard-probe", b"hostguard-wait"  # what ps, top and the alert show
SLOT_POLL = 0.05  # seconds between tries for a slot an earlier child holds


@dataclass(frozen=True)
class ProbeResult:
    """What the child said: ok, or the error of the failed write/fsync."""

    ok: bool
    error: str = ""


def parse_reply(data: bytes) -> ProbeResult:
    """`ok` or `err ERRNO MESSAGE`."""
    text = data.decode("utf-8", "replace").strip()
    if text == "ok":
        return ProbeResult(True)
    return ProbeResult(False, text.removeprefix("err ").strip() or "no answer")


def slot_name(mount: str) -> bytes:
    """The abstract socket name that one probe at a time holds for a mount (host-wide, per
    network namespace). The path is hashed with 64-bit FNV-1a, not hashlib, whose libcrypto
    would add megabytes to the watcher's locked memory; a collision only makes two mounts
    take turns."""
    h = 0xCBF29CE484222325
    for byte in os.fsencode(mount):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return b"\0failberry-hostguard-probe:%016x" % h


def _close_other_fds(keep: tuple[int, ...]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _set_comm(name: bytes) -> None:
    with contextlib.suppress(OSError):
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, name)
        finally:
            os.close(fd)


def _try_slot(name: bytes) -> socket.socket | None:
    """The mount's slot if no other probe holds it now (or if slots cannot work here)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(name)
        return s
    except OSError as e:
        s.close()
        if e.errno != errno.EADDRINUSE:
            return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # probe unguarded
        return None


def _wait_slot(name: bytes, cmd_r: int) -> socket.socket | None:
    """Wait (in S) for the slot; None when the watcher asks us to quit or is gone meanwhile."""
    slot = _try_slot(name)
    if slot is None:
        _set_comm(COMM_WAITING)
        while slot is None:
            if select.select([cmd_r], [], [], SLOT_POLL)[0]:
                return None  # QUIT or end of file: the next read says which
            slot = _try_slot(name)
        _set_comm(COMM)
    return slot


def _probe(path: str) -> bytes:
    """One write + fsync; the reply line."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                     | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, PAYLOAD)
            os.fsync(fd)
        finally:
            os.close(fd)
        return b"ok\n"
    except OSError as e:
        return f"err {e.errno} {e.strerror}\n".encode()


def _child(path: str, slot: bytes, cmd_r: int, reply_w: int) -> None:
    """The probe loop; runs in the forked child and never returns to the caller's code."""
    # No signal may reach a task that waits on a hung mount (see the module's docstring):
    # ignore the usual ones, block the rest, and leave the terminal's process group, whose
    # Ctrl-C would otherwise reach us too. Only SIGKILL and SIGSTOP get through.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    with contextlib.suppress(OSError):
        os.setsid()
    # Nothing of the watcher's stays open here: not its sockets, not its stdout (a journal
    # stream, or a caller's pipe that must see end of file when the watcher exits).
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _close_other_fds((cmd_r, reply_w))
    _set_comm(COMM)
    while True:
        cmd = os.read(cmd_r, 1)
        if cmd != GO:
            break
        held = _wait_slot(slot, cmd_r)
        if held is None:
            continue
        try:
            reply = _probe(path)
        finally:
            held.close()
        with contextlib.suppress(OSError):
            os.write(reply_w, reply)  # EPIPE: the watcher is gone; the next read ends the loop
    if cmd == QUIT:
        # A clean stop: take the probe file away, unless another probe is in the mount now
        # (an unlink would queue behind its locks).
        held = _try_slot(slot)
        if held is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            held.close()


class ProbeWorker:
    """One mount's probe child and the two pipes to it."""

    def __init__(self, mount: str) -> None:
        self.mount = mount
        self.path = os.path.join(mount, PROBE_FILE)
        self.slot = slot_name(mount)
        self.pid = 0
        self.cmd_w = -1
        self.reply_r = -1

    def spawn(self) -> None:
        """Fork the child."""
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                _child(self.path, self.slot, cmd_r, reply_w)
            finally:
                os._exit(0)
        os.close(cmd_r)
        os.close(reply_w)
        self.pid, self.cmd_w, self.reply_r = pid, cmd_w, reply_r
        LOG.debug("probe child %d for %s", pid, self.mount)

    def go(self) -> bool:
        """Ask for one probe; False when the child is gone."""
        try:
            os.write(self.cmd_w, GO)
            return True
        except OSError:
            return False

    def read_reply(self) -> ProbeResult | None:
        """The answer waiting on the pipe; None at end of file (the child died)."""
        try:
            data = os.read(self.reply_r, 512)
        except OSError:
            return None
        return parse_reply(data) if data else None

    def abandon(self) -> None:
        """Stop using this child: ask it to quit, close our ends, reap it if it has exited.
        Never a signal: a child that waits on a hung mount quits once the mount answers."""
        with contextlib.suppress(OSError):
            os.write(self.cmd_w, QUIT)
        for fd in (self.cmd_w, self.reply_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.cmd_w = self.reply_r = -1
        self.reap()

    def reap(self) -> bool:
        """Collect the child if it has exited; True when it is gone (never blocks)."""
        if not self.pid:
            return True
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        if pid:
            self.pid = 0
            return True
        return False
