"""`supervisor.json` in `paths.run_dir`: how `failberry status` finds the running supervisor.

The supervisor writes its pid, config file and status URL there once it listens (again after a
reload moves the listener) and removes it on the way out. `failberry status -c FILE` reads the
file in FILE's run directory and trusts it only if the pid is alive and ran that same config;
otherwise it falls back to FILE's health port. So several instances on one host, each with its
own `[paths]`, are found by their own configs, `--port` overrides included."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from failberry.fileio import write_atomic

LOG = logging.getLogger(__name__)

RUN_FILE = "supervisor.json"
_WILDCARDS = ("0.0.0.0", "::", "127.0.0.1", "::1")


def status_url(host: str, port: int) -> str:
    """The /status URL a local client uses for a listener on host:port."""
    if host in _WILDCARDS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def _same(a: Path | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process (the admin without sudo): it exists
    return True


@dataclass
class RunFile:
    """The file in one run directory."""

    run_dir: Path

    @property
    def path(self) -> Path:
        return self.run_dir / RUN_FILE

    def write(self, host: str, port: int, config: Path | None) -> None:
        """Say where we listen; a failure (no such directory for a non-root trial run) is
        logged, never fatal."""
        data = {"pid": os.getpid(), "config": None if config is None else str(config.resolve()),
                "url": status_url(host, port)}
        try:  # mode 0644: no secret in it; `failberry status` runs without sudo
            write_atomic(self.path, json.dumps(data) + "\n", 0o644)
        except OSError as e:
            LOG.warning("cannot write %s (%s); `failberry status` will guess the port from "
                        "the config", self.path, e.strerror or e)

    def remove(self) -> None:
        """Remove the file if it is still ours (another instance may have replaced it)."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(self.path.read_text())["pid"] == os.getpid():
                self.path.unlink()

    def running_pid(self) -> int | None:
        """The pid of a live supervisor that wrote this file (whatever its config), or None:
        no file, or a stale one whose pid is gone or is no longer failberry."""
        try:
            pid = int(json.loads(self.path.read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if b"failberry" in cmdline and pid != os.getpid() else None

    def url_for(self, config: Path) -> str | None:
        """The status URL of a live supervisor that runs `config`, or None."""
        try:
            data = json.loads(self.path.read_text())
            pid, url = int(data["pid"]), str(data["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not _alive(pid) or not _same(config, data.get("config")):
            return None
        return url
