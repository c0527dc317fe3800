"""The alerts state file: every channel's outbox and what was already told (cap fractions,
the last reboot), written atomically (a temporary file, fsync, rename) with mode 0600: the
messages may name numbers and addresses."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from failberry.fileio import write_atomic

LOG = logging.getLogger(__name__)

FILE_NAME = "alerts.json"


class StateFile:
    """Load once at start, save after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        """The saved state, or an empty one (a damaged file is logged and set aside)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            LOG.warning("ignoring unreadable alerts state %s: %s", self.path, e)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        """Write atomically; a failure is logged, never raised (alerts must keep flowing)."""
        try:
            write_atomic(self.path, json.dumps(data, sort_keys=True), 0o600)
        except OSError as e:
            LOG.warning("cannot save alerts state to %s: %s", self.path, e)
