"""Kernel settings the router needs (forwarding, loose reverse-path filtering), set with the
previous value remembered on disk, so `failberry net clean` from another process, or after a
crash, puts back exactly what was there."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from failberry.fileio import write_atomic
from failberry.procsys import ProcSys

LOG = logging.getLogger(__name__)

STATE_FILE = "sysctl-saved.json"


class Sysctl(Protocol):
    """Reads and writes `/proc/sys` keys written with slashes (`net/ipv4/ip_forward`)."""

    def read(self, key: str) -> str | None:
        """The value, or None when the key does not exist (an interface not there)."""

    def write(self, key: str, value: str) -> None:
        """Set it."""


ProcSysctl = ProcSys  # the real `/proc/sys` of the calling process's network namespace


class SysctlManager:
    """Sets desired values; the first change of a key saves its old value to the state dir."""

    def __init__(self, sysctl: Sysctl, state_dir: Path) -> None:
        self.sysctl = sysctl
        self.path = state_dir / STATE_FILE

    def _saved(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self, saved: Mapping[str, str]) -> None:
        write_atomic(self.path, json.dumps(dict(saved), sort_keys=True))

    def apply(self, desired: Mapping[str, str]) -> list[str]:
        """Set every key that differs; the changes made."""
        saved = self._saved()
        changes = []
        for key, value in sorted(desired.items()):
            old = self.sysctl.read(key)
            if old is None or old == value:
                continue
            if key not in saved:
                saved[key] = old
                self._save(saved)
            self.sysctl.write(key, value)
            changes.append(f"sysctl {key}: {old} -> {value}")
        return changes

    def restore(self) -> list[str]:
        """Put back every saved value (keys that vanished are skipped); forget them."""
        changes = []
        for key, old in sorted(self._saved().items()):
            now = self.sysctl.read(key)
            if now is not None and now != old:
                self.sysctl.write(key, old)
                changes.append(f"sysctl {key}: {now} -> {old} (restored)")
        self.path.unlink(missing_ok=True)
        return changes
