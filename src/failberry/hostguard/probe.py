"""The write probe: one pre-forked child per mount that, on each request over a pipe, writes
and fsyncs a small file in that mount and answers over another pipe.

The child is forked once, at start, from the already-loaded interpreter, so a probe loads
nothing from disk but the probe file itself. When the mount hangs, the child hangs in the
kernel (maybe in D state, where not even SIGKILL moves it); the watcher only notices that no
answer came in time. It never waits for the child: it reaps with WNOHANG and walks away."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass

from failberry.hostguard.reboot import Libc

LOG = logging.getLogger(__name__)

PROBE_FILE = ".failberry-hostguard-probe"
PAYLOAD = b"failberry hostguard write probe; safe to delete\n"
GO, QUIT = b"p", b"q"


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


def _close_other_fds(keep: tuple[int, ...]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _child(path: str, cmd_r: int, reply_w: int, libc: Libc | None) -> None:
    """The probe loop; runs in the forked child and never returns to the caller's code."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if libc is not None:
        libc.set_pdeathsig(signal.SIGKILL)  # die with the watcher, unless stuck in D
    # Nothing of the watcher's stays open here: not its sockets, not its stdout (a journal
    # stream, or a caller's pipe that must see end of file when the watcher exits).
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _close_other_fds((cmd_r, reply_w))
    while True:
        cmd = os.read(cmd_r, 1)
        if cmd != GO:
            break
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, PAYLOAD)
                os.fsync(fd)
            finally:
                os.close(fd)
            reply = b"ok\n"
        except OSError as e:
            reply = f"err {e.errno} {e.strerror}\n".encode()
        os.write(reply_w, reply)
    if cmd == QUIT:  # a clean stop, and the mount answered the last probe
        with contextlib.suppress(OSError):
            os.unlink(path)


class ProbeWorker:
    """One mount's probe child and the two pipes to it."""

    def __init__(self, mount: str, libc: Libc | None = None) -> None:
        self.mount = mount
        self.path = os.path.join(mount, PROBE_FILE)
        self.libc = libc
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
                _child(self.path, cmd_r, reply_w, self.libc)
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

    def abandon(self, quit_first: bool = True) -> None:
        """Stop using this child: ask it to quit, close our ends, kill it, reap without
        waiting. A child stuck in D state stays until the kernel lets go of it."""
        if quit_first:
            with contextlib.suppress(OSError):
                os.write(self.cmd_w, QUIT)
        for fd in (self.cmd_w, self.reply_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.cmd_w = self.reply_r = -1
        if self.pid and not quit_first:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
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
