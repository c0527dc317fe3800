"""The real supervisor with the real network part, its bus reachable from a test: `python
forcing.py CONFIG STATUS_FILE` in the Pi namespace.

Each line on stdin, `UPLINK SECONDS REASON...` (`none 0 REASON` cancels), is published on the
supervisor's bus as `ForceUplink`, as the alerts part does for an SMS `failover`/`failback`.
STATUS_FILE gets the network part's status report, plus `bus_changes`: every
`ActiveUplinkChanged` seen on the bus. The health endpoint listens where the config says
(all addresses, port 9000 by default), so the test can poll /health over an uplink."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from failberry import config, logsetup
from failberry.bus import ActiveUplinkChanged, Bus, ForceUplink
from failberry.config import Config
from failberry.net import part as netpart
from failberry.parts import Part, Recipe
from failberry.status import Status
from failberry.supervisor import Supervisor


class Console:
    """Stdin to `ForceUplink`; the network status and the bus's switches to a file."""

    name = "console"
    deadline = 3600.0

    def __init__(self, status: Status, bus: Bus, status_file: Path) -> None:
        self.status = status
        self.bus = bus
        self.status_file = status_file
        self.changes: list[dict[str, object]] = []

    async def run(self) -> None:
        """Until cancelled."""
        with self.bus.subscribe(ActiveUplinkChanged) as changes:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                         sys.stdin)
            tasks = [asyncio.create_task(self._read(reader)),
                     asyncio.create_task(self._write(changes))]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            uplink, seconds, reason = line.decode().strip().split(" ", 2)
            self.bus.publish(ForceUplink(None if uplink == "none" else uplink,
                                         float(seconds), reason))
        await asyncio.Event().wait()  # stdin closed: keep running

    async def _write(self, changes: asyncio.Queue[ActiveUplinkChanged]) -> None:
        last = ""
        while True:
            while not changes.empty():
                e = changes.get_nowait()
                self.changes.append({"uplink": e.uplink, "previous": e.previous,
                                     "reason": e.reason})
            net = self.status.snapshot()["parts"].get("network")
            if net:
                text = json.dumps({**net, "bus_changes": self.changes}, default=str)
                if text != last:
                    tmp = self.status_file.with_name(self.status_file.name + ".tmp")
                    tmp.write_text(text)
                    os.replace(tmp, self.status_file)
                    last = text
            await asyncio.sleep(0.02)


def main(argv: Sequence[str]) -> int:
    """Run until SIGTERM."""
    cfg_path, status_file = Path(argv[0]), Path(argv[1])
    logsetup.setup()
    logging.getLogger().setLevel(logging.INFO)
    cfg = config.load(cfg_path)
    state = Path(cfg.paths.state_dir)

    def parts(c: Config, status: Status, bus: Bus) -> list[Part | Recipe]:
        return [Recipe("network", lambda s: netpart.build(c, s, Path(c.paths.run_dir),
                                                          state / "usage.json")),
                Console(status, bus, status_file)]

    asyncio.run(Supervisor(cfg, config_path=cfg_path, parts=parts).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
