"""The network part alone, polled into a file: `python netrun.py -c CONFIG --state-dir DIR
--usage-file FILE --status-file FILE` in the Pi namespace (tests/net/topology.py's `Part`).
STATUS_FILE gets the part's `/status` section each time it changes. SIGTERM stops the part
the way the supervisor does (a clean stop)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from failberry import config
from failberry.bus import Bus
from failberry.fileio import write_atomic
from failberry.net.part import build
from failberry.parts import Seams
from failberry.status import Status


async def run(cfg_path: Path, state_dir: Path, usage: Path, status_file: Path | None) -> None:
    """Run the part until SIGTERM/SIGINT, writing its status section when it changes."""
    cfg = config.load(cfg_path)
    status = Status()
    status.state = "running"
    part = build(cfg, Seams(status, Bus()), state_dir, usage)
    task = asyncio.create_task(part.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    last = ""
    try:
        while not task.done():
            if status_file is not None:
                text = json.dumps(status.snapshot()["parts"].get("network", {}), default=str)
                if text != last:
                    write_atomic(status_file, text)
                    last = text
            await asyncio.wait([task], timeout=0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="netrun.py")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--usage-file", type=Path, required=True)
    p.add_argument("--status-file", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(run(args.config, args.state_dir, args.usage_file, args.status_file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
