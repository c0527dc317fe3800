"""Runs the real watcher (`failberry.hostguard.watcher.main`) with its reboot replaced by a
recorder, for the root tests and bench/hostguard.py:

    python3 tests/hostguard_runner.py CONFIG.toml REBOOT_RECORD KMSG_FILE [--dry-run]

The recorder appends `MONOTONIC_SECONDS REASON` to REBOOT_RECORD (CLOCK_MONOTONIC is the same
clock in every process, so the caller can compare it with its own `time.monotonic()`); the
kernel-log line goes to KMSG_FILE instead of /dev/kmsg."""

from __future__ import annotations

import sys
import time

from failberry import logsetup
from failberry.config import load_hostguard
from failberry.hostguard import watcher


class RebootRecorder:
    """Writes down that a reboot was asked for, and returns."""

    def __init__(self, path: str) -> None:
        self.path = path

    def reboot(self, reason: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.monotonic():.6f} {reason}\n")


def main(argv: list[str]) -> int:
    cfg_path, record, kmsg = argv[:3]
    logsetup.setup(False)
    cfg = load_hostguard(cfg_path)
    return watcher.main(cfg, dry_run="--dry-run" in argv, rebooter=RebootRecorder(record),
                        kmsg=kmsg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
