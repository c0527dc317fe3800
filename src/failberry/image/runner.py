"""The one helper every image-code subprocess goes through: it logs the command line,
streams stderr lines to a callback (progress), keeps stderr's end (or all of it) for the
error and the caller, runs the program in its own process group so an interruption stops the
whole group, and on failure raises CommandFailed naming the command, its status and that
tail."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from failberry.errors import CommandFailed, FailberryError

LOG = logging.getLogger(__name__)

TAIL_LINES = 40
# How long a child gets to clean up after SIGTERM (mmdebstrap unmounts and removes its
# temporary directory) before it is killed.
TERM_GRACE = 30.0


class ToolMissing(FailberryError):
    """Programs the image code needs are not installed."""

    def __init__(self, tools: Sequence[str], where: str = "") -> None:
        self.tools = tuple(tools)
        hint = f" ({where})" if where else ""
        super().__init__(f"not installed: {', '.join(self.tools)}; run `bash scripts/setup.sh`"
                         + hint)


@dataclass(frozen=True)
class Result:
    """What a finished command left: its status, stdout (when captured) and stderr (its last
    TAIL_LINES lines, or all of it with `whole_stderr`)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def stderr_tail(self) -> str:
        """The last TAIL_LINES lines of stderr."""
        return "\n".join(self.stderr.splitlines()[-TAIL_LINES:])


class Runner:
    """Runs commands (the seam the image code's steps are given)."""

    def run(self, argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, capture: bool = False, check: bool = True,
            stdin: bytes | None = None, timeout: float | None = None,
            on_line: Callable[[str], None] | None = None,
            stdout_to: Path | None = None, whole_stderr: bool = False) -> Result:
        """Run `argv`; raise CommandFailed when it fails (or times out) and `check` is set,
        ToolMissing when the program is not installed."""
        args = tuple(str(a) for a in argv)
        LOG.debug("run: %s", shlex.join(args))
        full_env = {**os.environ, **(env or {})}
        lines: collections.deque[str] = collections.deque(
            maxlen=None if whole_stderr else TAIL_LINES)
        out_file: IO[bytes] | None = stdout_to.open("wb") if stdout_to else None
        try:
            # Its own process group: an interruption is passed on to the whole group (see
            # _stop), as a terminal's Ctrl-C would be; mmdebstrap relies on that.
            proc = subprocess.Popen(
                args, cwd=cwd, env=full_env, process_group=0,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out_file if out_file else (subprocess.PIPE if capture
                                                  else subprocess.DEVNULL),
                stderr=subprocess.PIPE)
        except FileNotFoundError:
            if out_file:
                out_file.close()
            raise ToolMissing([args[0]]) from None
        reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines, on_line),
                                  daemon=True)
        reader.start()
        try:
            stdout = _communicate(proc, stdin, capture and not out_file, timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            reader.join(timeout=5)
            raise CommandFailed(args, proc.returncode if proc.returncode is not None else -9,
                                "\n".join([*lines, f"timed out after {timeout:g}s"])) from None
        except BaseException:
            # Interrupted (SIGINT): let the child clean up, then reap it, so nothing it
            # mounted or created outlives the build.
            _stop(proc)
            raise
        finally:
            reader.join(timeout=5)
            if out_file:
                out_file.close()
        result = Result(args, proc.returncode, stdout, "\n".join(lines))
        if check and proc.returncode != 0:
            raise CommandFailed(args, proc.returncode, result.stderr_tail)
        return result

    def spawn(self, argv: Sequence[str | Path], *, on_line: Callable[[str], None],
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running program (QEMU) whose merged output lines go to `on_line`;
        stop it with `stop()`."""
        args = tuple(str(a) for a in argv)
        LOG.info("starting: %s", shlex.join(args))
        proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, process_group=0,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=os.environ)
        threading.Thread(target=_read_lines, args=(proc.stdout, collections.deque(maxlen=1),
                                                   on_line), daemon=True).start()
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        """Stop a spawned program and its group (SIGINT, SIGTERM, SIGKILL); reap it."""
        _stop(proc, grace)


def _communicate(proc: subprocess.Popen[bytes], stdin: bytes | None, capture: bool,
                 timeout: float | None) -> bytes:
    if stdin is not None and proc.stdin:
        # Fed from a thread: a program that answers while it reads (debugfs) would otherwise
        # fill the stdout pipe while we still block writing its input.
        threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    chunks: list[bytes] = []
    reader = None
    if capture and proc.stdout:
        # Read in a thread too, so the timeout holds while the program is still writing.
        reader = threading.Thread(target=_read_all, args=(proc.stdout, chunks), daemon=True)
        reader.start()
    proc.wait(timeout=timeout)
    if reader is not None:
        reader.join()
    return b"".join(chunks)


def _read_all(stream: IO[bytes], chunks: list[bytes]) -> None:
    chunks.append(stream.read())
    stream.close()


def _feed(pipe: IO[bytes], data: bytes) -> None:
    # A program that exits early breaks the pipe; its status says why.
    with contextlib.suppress(BrokenPipeError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError):
        pipe.close()


def _stop(proc: subprocess.Popen[bytes], grace: float = TERM_GRACE) -> None:
    """SIGINT to the child's process group (what Ctrl-C sends; mmdebstrap ignores signals
    itself and cleans up when its children stop), then SIGTERM, then SIGKILL; reaped."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        LOG.info("stopping pid %d with %s", proc.pid, signal.Signals(sig).name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _read_lines(stream: IO[bytes] | None, lines: collections.deque[str],
                on_line: Callable[[str], None] | None) -> None:
    if stream is None:
        return
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        lines.append(line)
        if on_line is not None:
            try:
                on_line(line)
            except Exception:  # a progress display must not kill the build
                LOG.debug("progress callback failed on %r", line, exc_info=True)
    stream.close()


# For code not handed a Runner: the partition readers, the base-image steps, the admin key.
run = Runner().run
