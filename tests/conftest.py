"""Shared fixtures: a free loopback port, running the CLI as a subprocess, the example key."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# A valid ed25519 public key (its private half was thrown away).
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJyLRbqXOVce4SrI02eXvUJV+Jq7WUnnKqLVkl0uzMP1 "
           "test@failberry")


def free_port() -> int:
    """A TCP port nobody listens on right now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_cli(args: Sequence[str], *, timeout: float = 60, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m failberry ARGS` with this interpreter; output captured as text."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "failberry", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Root-tier tests need root; say so instead of failing obscurely."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, iptables, FUSE)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


# Test namespaces are named fb-<area>-<pid of the test process>-...; one whose process is gone
# was left by a run killed with SIGKILL (a timeout), which could not clean up after itself.
_TEST_NETNS = re.compile(r"^fb-[a-z0-9]+-(\d+)(?:-|$)")


def stale_test_namespaces(names: Sequence[str]) -> list[str]:
    """The test namespaces in `names` whose creating process no longer runs."""
    stale = []
    for name in names:
        m = _TEST_NETNS.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            stale.append(name)
    return stale


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove namespaces left by killed test runs (their processes first), so a rerun starts
    clean and a leftover never shadows a new test's names."""
    if os.geteuid() != 0:
        return
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    for ns in stale_test_namespaces(names):
        remove_namespace(ns)


def remove_namespace(ns: str) -> None:
    """Kill whatever still runs in network namespace `ns`, then delete it."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# The slow image tier's session fixtures: one image built per session, shared by every module.
from slow_image import admin_key, built, slow_dir  # noqa: E402,F401
