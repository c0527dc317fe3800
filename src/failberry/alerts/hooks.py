"""Hook scripts: every executable in the hooks directory runs on each alert, with the alert
in environment variables (FAILBERRY_EVENT, FAILBERRY_UPLINK, ...), in a session of its own
so that a timeout kills the script and everything it started; exit status is logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from failberry.aio import within
from failberry.alerts.channel import ChannelError
from failberry.alerts.model import Alert
from failberry.alerts.outbox import Policy

LOG = logging.getLogger(__name__)

KILL_GRACE = 2.0  # SIGTERM, then SIGKILL this much later
TAIL = 300


def environment(alert: Alert, text: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a hook script gets."""
    env = dict(base if base is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    env.update({
        "FAILBERRY_EVENT": alert.event.value,
        "FAILBERRY_SEVERITY": alert.severity.name.lower(),
        "FAILBERRY_MESSAGE": text,
        "FAILBERRY_UPLINK": alert.uplink or "",
        "FAILBERRY_PREVIOUS_UPLINK": alert.previous or "",
        "FAILBERRY_REASON": alert.reason,
        "FAILBERRY_TIME": f"{alert.at:.0f}",
    })
    for key, value in alert.fields.items():
        name = "FAILBERRY_" + "".join(c if c.isalnum() else "_" for c in key).upper()
        env.setdefault(name, value)
    return env


@dataclass(frozen=True)
class HookResult:
    """How one script ended."""

    script: str
    returncode: int | None  # None: killed at the timeout
    output_tail: str


def scripts(directory: Path) -> list[Path]:
    """Executable regular files in `directory`, by name (none if it does not exist);
    editor backups and dotfiles are skipped, like run-parts."""
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    except OSError as e:
        LOG.warning("cannot list hook scripts in %s: %s", directory, e)
        return []
    return [p for p in entries if p.is_file() and os.access(p, os.X_OK)
            and not p.name.startswith(".") and not p.name.endswith(("~", ".bak", ".dpkg-old"))]


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_script(path: Path, env: dict[str, str], timeout: float) -> HookResult:
    """Run one script; at the timeout its whole process group gets SIGTERM, then SIGKILL."""
    with tempfile.TemporaryFile() as out:
        proc = await asyncio.create_subprocess_exec(
            str(path), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            start_new_session=True, cwd="/")
        try:
            rc: int | None = await within(proc.wait(), timeout)
        except TimeoutError:
            rc = None
            _killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await within(proc.wait(), KILL_GRACE)
            _killpg(proc.pid, signal.SIGKILL)  # also whatever it started, still in its group
            await proc.wait()
        except asyncio.CancelledError:
            _killpg(proc.pid, signal.SIGKILL)
            raise
        out.seek(0)
        tail = out.read()[-TAIL:].decode("utf-8", "replace").strip()
    return HookResult(path.name, rc, tail)


class HookChannel:
    """Runs every hook script for each alert, one after another."""

    def __init__(self, directory: Path, timeout: float, policy: Policy,
                 name: str = "hooks") -> None:
        self.name = name
        self.directory = directory
        self.timeout = timeout
        self.policy = policy

    async def send(self, alert: Alert, text: str) -> None:
        """Run the scripts; ChannelError if one failed or timed out (after all have run)."""
        env = environment(alert, text)
        failed = []
        for path in scripts(self.directory):
            r = await run_script(path, env, self.timeout)
            if r.returncode is None:
                LOG.warning("hook %s killed after %gs (%s)", r.script, self.timeout,
                            alert.event.value)
                failed.append(f"{r.script} timed out")
            elif r.returncode != 0:
                LOG.warning("hook %s exited %d (%s): %s", r.script, r.returncode,
                            alert.event.value, r.output_tail or "no output")
                failed.append(f"{r.script} exited {r.returncode}")
            else:
                LOG.info("hook %s ran for %s", r.script, alert.event.value)
        if failed:
            raise ChannelError(self.name, "; ".join(failed))
