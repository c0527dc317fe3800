"""`failberry run`: one asyncio loop that owns every part of the supervisor.

This is the minimal shape: the health endpoint, systemd notification and the watchdog. The
modem driver, network applier, probes, failover and DDNS attach to it as they land."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from failberry import __version__
from failberry.config import Config
from failberry.health import HealthServer
from failberry.sdnotify import Notifier, watchdog_interval
from failberry.status import Status

LOG = logging.getLogger(__name__)

LOOP_PART = "loop"


class Supervisor:
    """Owns the loop's parts; `run()` returns when asked to stop."""

    def __init__(self, cfg: Config, notifier: Notifier | None = None,
                 port: int | None = None, host: str | None = None) -> None:
        self.cfg = cfg
        self.status = Status()
        self.notifier = notifier or Notifier()
        self.http = HealthServer(
            {"/health": self._health, "/status": self._status},
            host if host is not None else cfg.health.listen,
            port if port is not None else cfg.health.port,
        )
        self._stop = asyncio.Event()
        self.watchdog_period = watchdog_interval()

    def _health(self, _path: str) -> tuple[int, dict[str, Any]]:
        ok = self.status.healthy()
        body: dict[str, Any] = {"status": "ok" if ok else "fail", "state": self.status.state}
        stale = self.status.stale_parts()
        if stale:
            body["stale"] = stale
        return (200 if ok else 503), body

    def _status(self, _path: str) -> tuple[int, dict[str, Any]]:
        return 200, self.status.snapshot()

    def request_stop(self, why: str) -> None:
        """Ask the loop to finish (signal handlers call this)."""
        if not self._stop.is_set():
            LOG.info("stopping: %s", why)
            self._stop.set()

    async def _heartbeat(self) -> None:
        """Reports the loop itself alive; pings the watchdog only while every part is current."""
        period = self.watchdog_period or 1.0
        tick = min(period, 1.0)
        while True:
            self.status.report(LOOP_PART, "running")
            stale = self.status.stale_parts()
            if self.watchdog_period is not None:
                if stale:
                    LOG.warning("not pinging the watchdog: %s silent", ", ".join(stale))
                else:
                    self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(tick)

    async def run(self) -> None:
        """Start everything, tell systemd we are ready, wait for a stop request, tear down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        self.status.register(LOOP_PART, deadline=5.0)
        await self.http.start()
        self.status.state = "running"
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        self.notifier.notify("READY=1", f"STATUS=failberry {__version__} running; "
                             f"health on port {self.http.port}")
        LOG.info("supervisor running (failberry %s, mode %s)", __version__,
                 self.cfg.failover.mode.value)
        try:
            await self._stop.wait()
        finally:
            self.status.state = "stopping"
            self.notifier.notify("STOPPING=1")
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self.http.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            LOG.info("supervisor stopped")


def run(cfg: Config, port: int | None = None, host: str | None = None) -> int:
    """Run the supervisor until SIGTERM/SIGINT; the exit status."""
    sup = Supervisor(cfg, port=port, host=host)
    asyncio.run(sup.run())
    return 0
