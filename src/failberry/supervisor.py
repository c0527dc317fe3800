"""`failberry run`: one asyncio loop that owns every part of the supervisor.

The loop runs each part (modem, network, dynamic DNS: `failberry.parts`) as a task and
restarts one that crashes, with backoff; it serves the health endpoint, tells systemd it is
ready, pings the watchdog only while the loop turns and every part reports on time, keeps
systemd's STATUS= line current, reloads the config on SIGHUP and stops within 2 s on SIGTERM.
Blocking libraries run in the loop's default executor (`asyncio.to_thread`), whose threads
the loop owns."""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failberry import __version__, config
from failberry.backoff import exponential
from failberry.bus import Bus
from failberry.config import Config
from failberry.errors import ConfigError, FailberryError
from failberry.ioexec import IoExecutor, raise_nofile
from failberry.logsetup import redact_secrets
from failberry.parts import Part, Recipe, Seams, build_parts, part_modules
from failberry.runfile import RunFile
from failberry.sdnotify import Notifier, watchdog_interval
from failberry.status import Status, modem_view, network_view
from failberry.web.health import HealthApp
from failberry.web.httpserver import HttpServer, HttpStats, Limits

LOG = logging.getLogger(__name__)

# While it starts, each step done (listening, each module imported) gives systemd's start
# timeout this much more (sd_notify EXTEND_TIMEOUT_USEC): a slow board (a Pi 2 on its first
# boot, busy with host keys) is not killed mid-start and restarted for ever, and a start that
# stops making progress still is.
STARTING_EXTENSION = f"EXTEND_TIMEOUT_USEC={90 * 1_000_000}"

LOOP_PART = "loop"

PartsFactory = Callable[[Config, Status, Bus], Sequence[Part | Recipe]]


class ListenError(FailberryError):
    """The health endpoint cannot bind its address."""


@dataclass(frozen=True)
class Timing:
    """The supervisor's own clocks."""

    tick: float = 1.0  # heartbeat: loop report, watchdog, STATUS=
    loop_deadline: float = 5.0
    restart_initial: float = 1.0  # a crashed part waits this long, doubling each time
    restart_max: float = 60.0
    stable_after: float = 60.0  # a part that ran this long starts its backoff afresh
    stop_grace: float = 1.5  # parts get this long to clean up; SIGTERM must end within 2 s


def _handover(part: Part | None) -> object:
    """What a crashed part hands the object built in its place (`handover()`, optional)."""
    handover: Callable[[], object] | None = getattr(part, "handover", None)  # optional in Part
    return None if handover is None else handover()


class Supervisor:
    """Owns the loop's parts; `run()` returns when asked to stop."""

    def __init__(self, cfg: Config, *, notifier: Notifier | None = None,
                 port: int | None = None, host: str | None = None,
                 parts: PartsFactory = build_parts, config_path: Path | None = None,
                 watchdog_period: float | None = None, timing: Timing | None = None,
                 limits: Limits | None = None, warm_up: Sequence[str] = ()) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.parts_factory = parts
        self.status = Status()
        self.bus = Bus()
        self.notifier = notifier or Notifier()
        self.watchdog_period = watchdog_period
        self.timing = timing or Timing()
        self.restarts: dict[str, int] = {}
        self._port_override = port
        self._host_override = host
        self.http_stats = HttpStats()
        self.app = HealthApp(self.status, cfg, self.http_stats, self.restarts)
        host, port = self._address(cfg)
        self.http = HttpServer(self.app, host, port, limits, self.http_stats)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._scope: Bus | None = None  # the running parts' view of the bus
        self._part_scopes: list[Bus] = []  # each recipe's part's own view
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._withholding = False
        self._status_line = ""
        self.runfile = RunFile(Path(cfg.paths.run_dir))  # how `failberry status` finds us
        self.warm_up = tuple(warm_up)  # modules imported before the parts are built

    def _address(self, cfg: Config) -> tuple[str, int]:
        host = self._host_override if self._host_override is not None else cfg.health.listen
        port = self._port_override if self._port_override is not None else cfg.health.port
        return host, port

    def request_stop(self, why: str) -> None:
        """Ask the loop to finish (signal handlers call this)."""
        if not self._stop.is_set():
            LOG.info("stopping: %s", why)
            self._stop.set()

    # -- parts --

    def _start_parts(self) -> None:
        # What these parts subscribe to ends with them (and with their reload). A recipe's
        # part gets a view of its own, which outlives the objects built on it: a crashed
        # object's queues go to the next one (see _rebuild). A ready-made part (the tests'
        # fakes) is run again as it is when it crashes.
        self._scope = self.bus.scope()
        for item in self.parts_factory(self.cfg, self.status, self._scope):
            name = item.name
            if name in self._tasks or name == LOOP_PART:
                LOG.error("part name %r used twice; not starting the second", name)
                continue
            part: Part | None = None
            error: Exception | None = None
            if isinstance(item, Recipe):
                scope = self.bus.scope()
                self._part_scopes.append(scope)
                try:
                    part = self._build(item, Seams(self.status, scope))
                except Exception as e:  # noqa: BLE001  retried like a crash
                    error = e
                run = self._keep_running(item, scope, part, error)
            else:
                part = item
                run = self._keep_running(None, self._scope, part, None)
            self.status.register(name, part.deadline if part else self.timing.stable_after)
            self.restarts.setdefault(name, 0)
            self._tasks[name] = asyncio.create_task(run, name=f"part-{name}")
        LOG.info("started %d part(s): %s", len(self._tasks), ", ".join(self._tasks) or "none")

    @staticmethod
    def _build(recipe: Recipe, seams: Seams) -> Part:
        part = recipe.build(seams)
        if part.name != recipe.name:
            raise TypeError(f"part {recipe.name}: its recipe built a part named {part.name!r}")
        return part

    def _rebuild(self, recipe: Recipe, scope: Bus, crashed: Part | None) -> Part:
        """A fresh object in place of `crashed` (None: none was ever built), handed what it
        kept and the bus queues it left open."""
        kept = _handover(crashed)
        scope.hand_over()
        part = self._build(recipe, Seams(self.status, scope, kept))
        scope.taken_over()
        return part

    async def _keep_running(self, recipe: Recipe | None, scope: Bus, part: Part | None,
                            error: Exception | None) -> None:
        """Run the part; when it crashes (or returns), log it and start it again after a
        backoff. A recipe's part is replaced by a fresh object built from the recipe (new
        sockets, threads and state: nothing the crash left half-done is reused, only what
        the crashed one hands over); `error`: the first build failed, try again after the
        backoff. What the part subscribed through `scope` is closed when it stops for good."""
        try:
            await self._restart_loop(recipe, scope, part, error)
        finally:
            if recipe is not None:
                scope.close()

    async def _restart_loop(self, recipe: Recipe | None, scope: Bus, part: Part | None,
                            error: Exception | None) -> None:
        loop = asyncio.get_running_loop()
        t = self.timing
        failures = 0  # in a row, each after a short run
        if recipe is not None:
            name = recipe.name
        else:
            assert part is not None
            name = part.name
        current, previous = part, None
        while True:
            started = loop.time()
            try:
                if error is not None:
                    e, error = error, None
                    raise e
                if current is None:
                    assert recipe is not None
                    current = self._rebuild(recipe, scope, previous)
                await current.run()
                why, level = "returned", logging.WARNING
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a crashing part must never take the loop down
                what = ("crashed" if current is not None else
                        "could not be rebuilt" if previous is not None else "could not be built")
                why, level = f"{what}: {type(e).__name__}: {e}", logging.ERROR
                # The first crash of a run of crashes carries its traceback (what a bug
                # report needs); the ones that follow only at DEBUG, so a loop cannot flood.
                LOG.log(logging.ERROR if failures == 0 else logging.DEBUG,
                        "part %s traceback", name, exc_info=True)
            if loop.time() - started >= t.stable_after:
                failures = 0
            failures += 1
            backoff = exponential(failures, t.restart_initial, t.restart_max)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            LOG.log(level, "part %s %s; restarting it in %gs (restart %d)", name, why,
                    backoff, self.restarts[name])
            if recipe is not None:
                previous = current or previous  # built after the backoff
                current = None
            await asyncio.sleep(backoff)

    async def _stop_parts(self) -> None:
        tasks = dict(self._tasks)
        self._tasks.clear()
        for task in tasks.values():
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks.values(), timeout=self.timing.stop_grace)
            for name, task in tasks.items():
                if task in pending:
                    LOG.warning("part %s did not finish cleaning up within %.1fs", name,
                                self.timing.stop_grace)
                elif not task.cancelled() and task.exception() is not None:
                    LOG.warning("part %s failed while stopping: %s", name, task.exception())
        for name in tasks:
            self.status.unregister(name)
        if self._scope is not None:  # what parts subscribed in run() and left open
            self._scope.close()
            self._scope = None
        for scope in self._part_scopes:  # also of a part still cleaning up
            scope.close()
        self._part_scopes.clear()

    # -- reload --

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self.reload(), name="reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> bool:
        """Read the config file again; apply it if valid, else keep the running one."""
        async with self._reload_lock:
            if self.config_path is None:
                LOG.warning("reload asked, but no config file is known; nothing to do")
                return False
            try:
                cfg = await asyncio.to_thread(config.load, self.config_path)
            except ConfigError as e:
                LOG.error("reload refused, keeping the running config: %s",
                          "; ".join(str(i) for i in e.issues) or str(e))
                return False
            if cfg == self.cfg:
                LOG.info("reload: %s unchanged; nothing to do", self.config_path)
                return True
            # Before the parts run (their modules still loading) the new config is simply
            # the one they will be built from.
            live = self.status.state == "running"
            LOG.info("reload: applying the new %s%s", self.config_path,
                     "; restarting the parts" if live else "")
            redact_secrets(cfg)
            if live:
                await self._stop_parts()
            self.cfg = cfg
            self.app.configure(cfg)
            await self._rebind(cfg)
            if live:
                self._start_parts()
            return True

    async def _rebind(self, cfg: Config) -> None:
        host, port = self._address(cfg)
        if (host, port) == (self.http.host, self.http.port):
            return
        new = HttpServer(self.app, host, port, self.http.limits, self.http_stats)
        try:
            await new.start()
        except OSError as e:
            LOG.error("cannot listen on %s:%d (%s); staying on %s:%d", host, port, e,
                      self.http.host, self.http.port)
            return
        old, self.http = self.http, new
        await old.stop()
        self.runfile.write(new.host, new.port, self.config_path)

    async def _import_part_modules(self) -> None:
        """Import the parts' modules one by one on the loop, letting it answer /health
        ("supervisor starting", 503) and signals between them: on a Pi they take seconds, and
        the health server listened before any of them. (On the loop, not in a thread: a thread
        importing while the loop imports too hung the supervisor once.)"""
        started = time.monotonic()
        for name in self.warm_up:
            if self._stop.is_set():
                return
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001 - the part's build reports it
                LOG.debug("importing %s before the parts: %s", name, e)
            self.notifier.notify(STARTING_EXTENSION)
            # A few turns of the loop: an accepted /health request is read, answered, written.
            for _ in range(8):
                await asyncio.sleep(0)
        if self.warm_up:
            LOG.debug("parts' modules imported in %.1fs", time.monotonic() - started)

    def _go_live(self) -> asyncio.Task[None]:
        """Start the parts and the heartbeat, tell systemd we are ready; the heartbeat."""
        self.status.state = "running"
        self._start_parts()
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        # Everything imported and built so far lives as long as the process: move it out of
        # the cyclic collector's sight, so the full collections that request garbage
        # triggers stay short (they were the millisecond stalls in /health's p99).
        gc.collect()
        gc.freeze()
        self.notifier.notify("READY=1", f"STATUS=failberry {__version__} running; "
                             f"health on port {self.http.port}")
        LOG.info("supervisor running (failberry %s, mode %s, watchdog %s)", __version__,
                 self.cfg.failover.mode.value,
                 f"every {self.watchdog_period:g}s" if self.watchdog_period else "off")
        return heartbeat

    # -- heartbeat, watchdog, STATUS= --

    def status_line(self) -> str:
        """systemd's one-line STATUS=: health, active uplink, modem."""
        v = self.app.verdict()
        words = [f"health {'ok' if v.ok else 'fail'} ({v.reason})"]
        net = network_view(self.status)
        if net is not None:
            words.append(f"active {net.active_uplink or 'none'}")
        modem = modem_view(self.status)
        if modem is not None:
            state, report = modem
            dbm = report.signal_dbm
            words.append(f"modem {state}" + (f" {dbm} dBm" if dbm is not None else ""))
        return "; ".join(words)

    async def _heartbeat(self) -> None:
        """Reports the loop alive; pings the watchdog only while every part is current."""
        tick = self.timing.tick
        if self.watchdog_period is not None:
            tick = min(tick, self.watchdog_period)  # sd_notify(3): ping at half WatchdogSec
        while True:
            self.status.report(LOOP_PART, "running")
            stale = self.status.stale_parts()
            if self.watchdog_period is not None:
                if stale:
                    if not self._withholding:
                        LOG.warning("withholding the watchdog ping: %s not reporting",
                                    ", ".join(stale))
                        self._withholding = True
                else:
                    if self._withholding:
                        LOG.info("every part reports again; watchdog pings resume")
                        self._withholding = False
                    self.notifier.notify("WATCHDOG=1")
            line = self.status_line()
            if line != self._status_line:
                self._status_line = line
                self.notifier.notify(f"STATUS={line}")
            await asyncio.sleep(tick)

    # -- the whole life --

    async def run(self) -> None:
        """Start everything, tell systemd we are ready, wait for a stop request, tear down."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(IoExecutor())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        redact_secrets(self.cfg)
        self.status.register(LOOP_PART, deadline=self.timing.loop_deadline)
        try:
            await self.http.start()
        except OSError as e:
            raise ListenError(f"cannot listen on {self.http.host}:{self.http.port}: "
                              f"{os.strerror(e.errno) if e.errno else e}") from None
        self.runfile.write(self.http.host, self.http.port, self.config_path)
        self.notifier.notify(STARTING_EXTENSION)
        await self._import_part_modules()
        # A stop asked for while the modules loaded: no part is started only to be stopped.
        heartbeat = None if self._stop.is_set() else self._go_live()
        try:
            await self._stop.wait()
        finally:
            self.status.state = "stopping"
            self.notifier.notify("STOPPING=1")
            tasks = [t for t in (heartbeat, *self._background) if t is not None]
            for task in tasks:
                task.cancel()
            await self._stop_parts()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.http.stop()
            self.runfile.remove()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            LOG.info("supervisor stopped")


def run(cfg: Config, port: int | None = None, host: str | None = None,
        config_path: Path | None = None, manage_network: bool = True) -> int:
    """Run the supervisor until SIGTERM/SIGINT; the exit status."""
    raise_nofile()
    if not manage_network:
        LOG.warning("--no-network: routes, NAT and the firewall are left alone; "
                    "the LAN is not routed")
    factory = functools.partial(build_parts, manage_network=manage_network)
    sup = Supervisor(cfg, port=port, host=host, config_path=config_path,
                     watchdog_period=watchdog_interval(), parts=factory,
                     warm_up=part_modules(cfg, manage_network=manage_network))
    asyncio.run(sup.run())
    return 0
