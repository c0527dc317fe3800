"""The real supervisor running only the real network part, for root tests in the Pi namespace:
`python supervised.py CONFIG PORT STATE_DIR [CRASH_FILE]`.

With CRASH_FILE, the part's prober (a seam) raises once each time that file appears, as a bug
in the part would: the supervisor's restart of a crashed network part is tested with the real
routes, NAT and firewall. The health endpoint listens on 127.0.0.1:PORT (in the namespace)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from failberry import config, logsetup
from failberry.bus import Bus
from failberry.config import Config
from failberry.net import part as netpart
from failberry.net.probes import Binding, Prober, ProbeResult, Target
from failberry.parts import Recipe, Seams
from failberry.status import Status
from failberry.supervisor import Supervisor, Timing

RESTART_AFTER = 4.0  # the supervisor's first backoff: the window the tests look into


class CrashingProber:
    """The real prober, raising once whenever the crash file exists (it is removed)."""

    def __init__(self, real: Prober, crash_file: Path | None) -> None:
        self.real = real
        self.crash_file = crash_file

    async def round(self, binding: Binding, targets: Sequence[Target],
                    timeout: float) -> list[ProbeResult]:
        """A probe round, or the injected crash."""
        if self.crash_file is not None and self.crash_file.exists():
            self.crash_file.unlink()
            raise RuntimeError("injected crash")
        return await self.real.round(binding, targets, timeout)


def build(cfg: Config, seams: Seams, state_dir: Path,
          crash_file: Path | None) -> netpart.NetworkPart:
    """`failberry.net.part.build`, with the prober wrapped (the supervisor rebuilds it the
    same way after a crash)."""
    part = netpart.build(cfg, seams, state_dir, state_dir / "usage.json")
    part.s = dataclasses.replace(part.s, prober=CrashingProber(part.s.prober, crash_file))
    return part


def main(argv: Sequence[str]) -> int:
    """Run until SIGTERM."""
    cfg_path, port, state_dir = Path(argv[0]), int(argv[1]), Path(argv[2])
    crash_file = Path(argv[3]) if len(argv) > 3 else None
    logsetup.setup()
    logging.getLogger().setLevel(logging.INFO)
    cfg = config.load(cfg_path)

    def parts(c: Config, _status: Status, _bus: Bus) -> list[Recipe]:
        return [Recipe("network", lambda s: build(c, s, state_dir, crash_file))]

    sup = Supervisor(cfg, port=port, host="127.0.0.1", config_path=cfg_path, parts=parts,
                     timing=Timing(restart_initial=RESTART_AFTER))
    asyncio.run(sup.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
