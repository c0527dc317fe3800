"""The modem driver: the thin asyncio shell around the pure machine. It turns discovery, AT
replies, URCs, pppd and timers into events, feeds them to `Machine.handle`, performs the
actions it returns, and reports to the bus and the status snapshot. What is said to the stick
lives in `session`; the reboot command and the reboot log in `adapters`."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from failberry.bus import Bus, ModemStateChanged
from failberry.config import ModemConfig
from failberry.modem import events as ev
from failberry.modem.adapters import (  # re-exported: the seams' old home
    CommandReboot,
    Rebooter,
    RebootFailed,
    RebootLog,
    read_counters,
)
from failberry.modem.at import AtChannel, SerialPort
from failberry.modem.attasks import AtTasks
from failberry.modem.datapath import DataRunner
from failberry.modem.errors import AtError, AtTimeout, ModemError, PortGone, UsbPowerError
from failberry.modem.follow import private_address
from failberry.modem.hilink import HilinkBackend
from failberry.modem.ladder import Rung
from failberry.modem.machine import Machine
from failberry.modem.parsers import RegStat
from failberry.modem.session import Session, command_mode, command_mode_within
from failberry.modem.state import ModemState, Phase
from failberry.modem.usbpower import PowerRefused, UsbPower
from failberry.status import ModemReport, Status, report_modem

__all__ = ["CommandReboot", "Driver", "RebootLog", "Rebooter", "read_counters"]

LOG = logging.getLogger(__name__)

HILINK_ACTIONS = (ev.OpenPort, ev.QuerySim, ev.EnterPin, ev.QueryRegistration, ev.ResetModem)
POLLED = (Phase.REGISTERING, Phase.DENIED, Phase.DIALING, Phase.CONNECTED)
# On stop, the time for stopping pppd and bringing the data port back to command mode: the
# supervisor gives every part 1.5 s in all (SIGTERM ends within 2 s). DTR dropped, `AT` and
# `ATH` fit; the `+++` escape needs two guard times of silence and does not (a stick that
# ignores DTR stays in data mode; its next pppd run fails and the port is escaped then, as
# after any pppd exit).
STOP_BUDGET = 1.3


class Driver(AtTasks):
    """Runs the machine; `post(event)` from anywhere in the loop, `run()` until cancelled."""

    def __init__(self, cfg: ModemConfig, machine: Machine, *, status: Status, bus: Bus,
                 opener: Callable[[str], SerialPort], ppp: DataRunner, usb: UsbPower,
                 rebooter: Rebooter, reboot_log: RebootLog | None = None,
                 poll_interval: float = 10.0, at_timeout: float = 5.0,
                 counters: Callable[[str], tuple[int | None, int | None]] = read_counters,
                 guard_time: float = 1.0, stop_budget: float = STOP_BUDGET) -> None:
        self.cfg = cfg
        self.machine = machine
        self.status = status
        self.bus = bus
        self.opener = opener
        self.ppp = ppp
        self.usb = usb
        self.rebooter = rebooter
        self.reboot_log = reboot_log
        self.poll_interval = poll_interval
        self.at_timeout = at_timeout
        self.counters = counters
        self.guard_time = guard_time
        self.stop_budget = stop_budget
        self.state = ModemState(reboots=reboot_log.load() if reboot_log else ())
        self.queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.gen = 0  # bumped whenever the AT channel changes; stale replies are dropped
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.info: dict[str, Any] = {}
        self.session = Session(at_timeout, self.info)
        ppp.attach(self.session)  # the bearer paths speak AT over the driver's session
        self.hilink: HilinkBackend | None = None  # answers for a stick without AT (HiLink)
        self.last_reg: dict[str, RegStat] = {}
        self.steps = 0
        # command_mode's result after each pppd exit, the last few (for status and tests)
        self.hangups: collections.deque[bool] = collections.deque(maxlen=16)
        # Others on the same port (the SMS code): URC lines passed on, and the channel once
        # the setup on it is done (None while opening, closed, or handed to pppd).
        self.urc_listeners: list[Callable[[str], None]] = []
        self.ready_channel: AtChannel | None = None
        self.data_mode_port: str | None = None  # pppd ran here; not yet back to command mode

    @property
    def channel(self) -> AtChannel | None:
        """The open AT channel (setup, then monitoring while the data port carries PPP)."""
        return self.session.channel

    @channel.setter
    def channel(self, value: AtChannel | None) -> None:
        self.session.channel = value

    # -- plumbing

    def post(self, event: ev.Event) -> None:
        """Queue an event for the machine."""
        self.queue.put_nowait(event)

    def _post_if(self, gen: int, event: ev.Event) -> None:
        if gen == self.gen:
            self.post(event)
        else:
            LOG.debug("dropping stale %s", event)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"modem-{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # An exception here is a bug; observed, it is a fault the ladder handles now, rather
        # than a silence the step timer notices two minutes later.
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        LOG.error("modem: task %s crashed: %r", task.get_name(), exc, exc_info=exc)
        self.post(ev.TaskFailed(task.get_name(), repr(exc)))

    async def run(self) -> None:
        """Feed events to the machine forever; clean up on cancel."""
        poller = asyncio.get_running_loop().create_task(self._poll_loop())
        self.report()
        try:
            while True:
                event = await self.queue.get()
                self.step(event)
        finally:
            deadline = asyncio.get_running_loop().time() + self.stop_budget
            poller.cancel()
            for handle in self.timers.values():
                handle.cancel()
            self._close_channel()
            await self.ppp.stop()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(poller, *self.tasks, return_exceptions=True)
            await self._leave_data_mode(deadline)

    async def _leave_data_mode(self, deadline: float) -> None:
        """On the way out, a port pppd left in data mode goes back to command mode (the pppd
        task was cancelled before it could), so the next start's discovery finds it
        answering AT; by `deadline` (`stop_budget`, pppd's stop included)."""
        port, self.data_mode_port = self.data_mode_port, None
        if port is not None:
            left = deadline - asyncio.get_running_loop().time()
            self.hangups.append(await command_mode_within(
                self.opener, port, self.guard_time, min(self.at_timeout, 0.5), left))

    def step(self, event: ev.Event) -> None:
        """One machine step, then its actions."""
        self.steps += 1
        if isinstance(event, ev.DeviceAdded):
            self.ppp.select(event.data, event.net)
            self.info["data_path"] = event.data
        old = self.state
        self.state, actions = self.machine.handle(old, event)
        if self.state.phase is not old.phase:
            self.bus.publish(ModemStateChanged(self.state.phase.value, old.phase.value,
                                               self.state.reason, self.state.interface,
                                               self.state.address))
            self.report()
            if self.state.phase in (Phase.REGISTERING, Phase.CONNECTED):
                self._spawn(self.poll(), "poll")  # signal and operator known at once
        for action in actions:
            self.perform(action)

    # -- actions

    def perform(self, action: ev.Action) -> None:
        """Carry out one action (I/O runs as a task that posts its outcome as an event)."""
        if isinstance(action, ev.StartTimer):
            self._cancel_timer(action.name)
            self.timers[action.name] = asyncio.get_running_loop().call_later(
                action.seconds, self.post, ev.TimerFired(action.name))
            return
        if isinstance(action, ev.CancelTimer):
            self._cancel_timer(action.name)
            return
        LOG.info("modem action %s (%s)", type(action).__name__, self.state.reason)
        if self._hilink() is not None and isinstance(action, HILINK_ACTIONS):
            if isinstance(action, ev.OpenPort):
                self._close_channel()  # a new generation: stale answers are dropped
            assert self.hilink is not None
            self._spawn(self.hilink.perform(self, action, self.gen), "hilink")
            return
        if isinstance(action, ev.OpenPort):
            self._close_channel()
            self._spawn(self._open(action.port, self.gen), "open")
        elif isinstance(action, ev.ClosePort):
            self._close_channel()
        elif isinstance(action, ev.QuerySim):
            self._spawn(self._query_sim(self.gen), "sim")
        elif isinstance(action, ev.EnterPin):
            self._spawn(self._enter_pin(self.gen), "pin")
        elif isinstance(action, ev.QueryRegistration):
            self._spawn(self._query_registration(self.gen), "registration")
        elif isinstance(action, ev.StartPpp):
            if self.ppp.exclusive and self.channel is not None and \
                    self.channel.name == action.port:
                self._close_channel()  # pppd needs the port to itself: no monitoring now
            self._spawn(self._run_ppp(action.port), "pppd")
        elif isinstance(action, ev.StopPpp):
            self._spawn(self.ppp.stop(), "stop-pppd")
        elif isinstance(action, ev.ResetModem):
            self._spawn(self._reset_modem(self.gen), "reset")
        elif isinstance(action, ev.UsbRebind):
            self._spawn(self._usb(Rung.USB_REBIND, self.usb.rebind, action.usb_path), "rebind")
        elif isinstance(action, ev.PortPowerCycle):
            self._spawn(self._usb(Rung.PORT_POWER, self.usb.power_cycle, action.usb_path),
                        "power")
        elif isinstance(action, ev.Reboot):
            self._spawn(self._reboot(action.reason), "reboot")

    def _hilink(self) -> HilinkBackend | None:
        return self.hilink if self.info.get("data_path") == "hilink" else None

    def _cancel_timer(self, name: str) -> None:
        handle = self.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _close_channel(self) -> None:
        self.gen += 1
        self.ready_channel = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    async def _run_ppp(self, port: str) -> None:
        def up(interface: str, address: str) -> None:
            self.post(ev.PppUp(interface, address))

        if self.ppp.exclusive:
            self.data_mode_port = port  # until command_mode below is done (see run())
        try:
            status = await self.ppp.run(port, up)
        except ModemError as exc:
            self.info["last_error"] = str(exc)
            status = 1
        # pppd leaves the stick in data mode (its peer file has `local`): bring the port
        # back to command mode before anything dials or climbs, or every redial's AT is
        # taken for data and the ladder resets a healthy stick.
        if self.ppp.exclusive:
            self.hangups.append(await command_mode(self.opener, port, self.guard_time,
                                                   self.at_timeout))
            self.data_mode_port = None
        self.post(ev.PppExited(status, self.ppp.why))

    async def _reset_modem(self, gen: int) -> None:
        if self.channel is None or self.channel.gone is not None:
            self._post_if(gen, ev.ActionFailed(Rung.MODEM_RESET,
                                                  "no AT port open; nothing sent"))
            return
        try:
            await self.session.cmd("AT+CFUN=1,1", 2 * self.at_timeout, resync=False)
        except PortGone:
            pass  # sent; the stick often drops the port before it answers: that is the reset
        except (AtError, AtTimeout) as exc:
            self._post_if(gen, ev.ActionFailed(Rung.MODEM_RESET, str(exc)))
            return
        if gen == self.gen:
            self._close_channel()  # it is restarting; the machine reopens after settling

    async def _usb(self, rung: Rung, fn: Callable[[str], None], usb_path: str) -> None:
        try:
            await asyncio.to_thread(fn, usb_path)
        except PowerRefused as exc:
            self.post(ev.ActionFailed(rung, str(exc), permanent=True))
        except UsbPowerError as exc:
            self.post(ev.ActionFailed(rung, str(exc)))

    async def _reboot(self, reason: str) -> None:
        if self.reboot_log is not None:
            try:
                self.reboot_log.save(self.state.reboots)
            except OSError as exc:
                LOG.warning("modem: cannot record the reboot in %s: %s",
                            self.reboot_log.path, exc)
        try:
            await self.rebooter.reboot(reason)
        except RebootFailed as exc:
            LOG.error("modem: reboot failed: %s", exc)
            self.post(ev.ActionFailed(Rung.REBOOT, str(exc)))

    # -- status

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.poll()

    async def poll(self) -> None:
        """Refresh signal, operator and registration while an AT port is open (the control
        port, or the monitoring port while the data port carries PPP), then report."""
        api = self._hilink()
        if api is not None and self.state.phase in POLLED:
            await api.poll(self)
        elif self.channel is not None and self.state.phase in POLLED:
            gen = self.gen
            try:
                await self.session.signal_and_operator()
                # While dialing or connected a registration change is only shown: pppd and
                # the probes decide about the link.
                await self._query_registration(
                    gen, report=self.state.phase in (Phase.REGISTERING, Phase.DENIED))
                if self.channel is not None and self.channel.stale:
                    await self.channel.resync(self.at_timeout)
            except AtTimeout as exc:
                self.info["last_error"] = str(exc)
                self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
            except (PortGone, ValueError) as exc:
                self.info["last_error"] = str(exc)
        self.report()

    def report(self) -> None:
        """Tell the status snapshot where the modem is."""
        s = self.state
        rx, tx = self.counters(s.interface) if s.interface else (None, None)
        rung = s.pending_rung.value if s.pending_rung else None
        reboots, per_day = self.machine.reboots_last_day(s), self.machine.cfg.reboots_per_day
        report_modem(self.status, s.phase.value, ModemReport(
            reason=s.reason, port=s.port, data_path=self.info.get("data_path"),
            manufacturer=self.info.get("manufacturer"), model=self.info.get("model"),
            sim=self.info.get("sim"), signal_dbm=self.info.get("signal_dbm"),
            operator=self.info.get("operator"), access_tech=self.info.get("access_tech"),
            registration=self.info.get("registration"), interface=s.interface,
            address=s.address, private_address=private_address(s.address), bytes_in=rx,
            bytes_out=tx, ladder_rung=rung, ladder_counts=s.ladder_counts,
            refused={r.value: why for r, why in s.refusals},
            last_error=s.last_error or self.info.get("last_error"),
            reboots_last_day=reboots, reboots_per_day=per_day,
            reboot_budget_spent=reboots >= per_day))
