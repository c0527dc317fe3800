"""The one way the image code runs a program: logged, and on failure a CommandFailed naming the
command line, its status and the end of its stderr."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from failberry.errors import CommandFailed, FailberryError

LOG = logging.getLogger(__name__)


class ToolMissing(FailberryError):
    """A program the image code needs is not installed."""


def run(argv: Sequence[str | Path], *, input: bytes | None = None,
        env: Mapping[str, str] | None = None, cwd: Path | None = None,
        timeout: float | None = 600.0, check: bool = True,
        stdout_to: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a program with output captured (or stdout into a file); raise CommandFailed if it
    fails and `check`."""
    args = [str(a) for a in argv]
    LOG.debug("running %s", shlex.join(args))
    try:
        if stdout_to is not None:
            with stdout_to.open("wb") as out:
                proc = subprocess.run(args, input=input, stdout=out, stderr=subprocess.PIPE,
                                      env=env, cwd=cwd, timeout=timeout, check=False)
        else:
            proc = subprocess.run(args, input=input, capture_output=True, env=env, cwd=cwd,
                                  timeout=timeout, check=False)
    except FileNotFoundError:
        raise ToolMissing(f"`{args[0]}` is not installed (run `bash scripts/setup.sh`)") from None
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"").decode("utf-8", "replace")[-2000:]
        raise CommandFailed(args, -9, f"timed out after {timeout:g}s {tail}") from None
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode,
                            proc.stderr.decode("utf-8", "replace")[-2000:])
    return proc
