"""`failberry run` for the end-to-end tests: the real supervisor (its loop, part restarts,
health server, /status, signals) with the real network part, in the namespace it is started in.

    python run_supervisor.py CONFIG

It differs from `failberry run -c CONFIG` only where `failberry run` does not yet honour two
config keys (issue 12, items 9 and 10, being wired elsewhere): the network part keeps its files
under `[paths] run_dir` and `state_dir` instead of the fixed /run/failberry and
/var/lib/failberry every instance on the host shares, and `[modem] enabled = false` runs no
modem part (the mobile uplink is an interface the test brings up; a modem part here would look
for a USB stick and climb its recovery ladder toward a reboot). Once `failberry run` honours
both, the tests can start `failberry run` instead of this file.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from failberry import config, logsetup
from failberry.bus import Bus
from failberry.config import Config, DnsProvider
from failberry.parts import Part
from failberry.status import Status
from failberry.supervisor import Supervisor, raise_nofile


def parts(cfg: Config, status: Status, bus: Bus) -> Sequence[Part]:
    """The network part (and dynamic DNS when configured); never a modem part."""
    from failberry.net.part import build as build_network

    if cfg.modem.enabled:
        raise SystemExit("run_supervisor.py runs no modem part: set [modem] enabled = false")
    out: list[Part] = [build_network(cfg, status, bus, state_dir=Path(cfg.paths.run_dir),
                                     usage_path=Path(cfg.paths.state_dir) / "mobile-usage.json")]
    if cfg.dyndns.provider is not DnsProvider.NONE:
        from failberry.dyndns.part import DyndnsPart
        out.append(DyndnsPart.from_config(cfg, status, bus))
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    logsetup.setup(False)
    cfg = config.load(path)
    raise_nofile()
    asyncio.run(Supervisor(cfg, parts=parts, config_path=path).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
