"""Shared fixtures: a free loopback port, running the CLI as a subprocess, the example key."""

from __future__ import annotations

import os
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
