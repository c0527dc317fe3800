"""The modem driver: the thin asyncio shell around the pure machine. It turns discovery, AT
replies, URCs, pppd and timers into events, feeds them to `Machine.handle`, performs the
actions it returns, and reports to the bus and the status snapshot."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from failberry.bus import Bus, ModemStateChanged
from failberry.config import ModemConfig
from failberry.modem import events as ev
from failberry.modem.at import AtChannel, SerialPort
from failberry.modem.errors import (
    CME_INCORRECT_PASSWORD,
    CME_SIM_BUSY,
    CME_SIM_MISSING,
    AtError,
    AtTimeout,
    CmeError,
    ModemError,
    PortGone,
    UsbPowerError,
)
from failberry.modem.machine import Machine, ModemState, Phase
from failberry.modem.parsers import (
    REG_PREFIXES,
    Registration,
    RegStat,
    SimState,
    parse_cops,
    parse_cpin,
    parse_csq,
    parse_identity,
    parse_registration,
    parse_vendor_access_tech,
    pick,
)
from failberry.modem.ppp import PppRunner
from failberry.status import Status
from failberry.usbpower import PowerRefused, UsbPower

LOG = logging.getLogger(__name__)

PART = "modem"


class Rebooter(Protocol):
    """The reboot seam."""

    def reboot(self, reason: str) -> None:
        """Reboot the machine (tests record the call instead)."""


class SystemdReboot:
    """`systemctl reboot`: lets systemd stop services cleanly."""

    def reboot(self, reason: str) -> None:
        """Ask systemd to reboot."""
        import subprocess

        LOG.warning("rebooting: %s", reason)
        subprocess.run(["systemctl", "reboot"], check=False, timeout=60)


class RebootLog:
    """Wall times of the reboots we asked for, kept on disk so the per-day limit survives
    the reboot itself."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[float, ...]:
        """The recorded times (empty if none or unreadable)."""
        try:
            data = json.loads(self.path.read_text())
            return tuple(float(t) for t in data)
        except (OSError, ValueError, TypeError):
            return ()

    def save(self, times: tuple[float, ...]) -> None:
        """Record the times (the last few are enough)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(list(times[-50:])))


def read_counters(interface: str, sysroot: Path = Path("/sys")) -> tuple[int | None, int | None]:
    """Bytes in and out of `interface` from sysfs; None when it is not there."""
    base = sysroot / "class" / "net" / interface / "statistics"
    try:
        return int((base / "rx_bytes").read_text()), int((base / "tx_bytes").read_text())
    except (OSError, ValueError):
        return None, None


class Driver:
    """Runs the machine; `post(event)` from anywhere in the loop, `run()` until cancelled."""

    def __init__(self, cfg: ModemConfig, machine: Machine, *, status: Status, bus: Bus,
                 opener: Callable[[str], SerialPort], ppp: PppRunner, usb: UsbPower,
                 rebooter: Rebooter, reboot_log: RebootLog | None = None,
                 poll_interval: float = 10.0, at_timeout: float = 5.0,
                 counters: Callable[[str], tuple[int | None, int | None]] = read_counters
                 ) -> None:
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
        self.state = ModemState(reboots=reboot_log.load() if reboot_log else ())
        self.queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.channel: AtChannel | None = None
        self.gen = 0  # bumped whenever the AT channel changes; stale replies are dropped
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.zcdrun_sent: set[str] = set()
        self.info: dict[str, Any] = {}
        self.last_reg: dict[str, RegStat] = {}
        self.steps = 0

    # -- plumbing

    def post(self, event: ev.Event) -> None:
        """Queue an event for the machine."""
        self.queue.put_nowait(event)

    def _post_if(self, gen: int, event: ev.Event) -> None:
        if gen == self.gen:
            self.post(event)
        else:
            LOG.debug("dropping stale %s", event)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        """Feed events to the machine forever; clean up on cancel."""
        poller = asyncio.get_running_loop().create_task(self._poll_loop())
        self.report()
        try:
            while True:
                event = await self.queue.get()
                self.step(event)
        finally:
            poller.cancel()
            for handle in self.timers.values():
                handle.cancel()
            self._close_channel()
            await self.ppp.stop()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(poller, *self.tasks, return_exceptions=True)

    def step(self, event: ev.Event) -> None:
        """One machine step, then its actions."""
        self.steps += 1
        old = self.state
        self.state, actions = self.machine.handle(old, event)
        if self.state.phase is not old.phase:
            self.bus.publish(ModemStateChanged(self.state.phase.value, old.phase.value,
                                               self.state.reason, self.state.interface,
                                               self.state.address))
            self.report()
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
        if isinstance(action, ev.OpenPort):
            self._close_channel()
            self._spawn(self._open(action.port, self.gen))
        elif isinstance(action, ev.ClosePort):
            self._close_channel()
        elif isinstance(action, ev.QuerySim):
            self._spawn(self._query_sim(self.gen))
        elif isinstance(action, ev.EnterPin):
            self._spawn(self._enter_pin(self.gen))
        elif isinstance(action, ev.QueryRegistration):
            self._spawn(self._query_registration(self.gen))
        elif isinstance(action, ev.StartPpp):
            if self.channel is not None and self.channel.name == action.port:
                self._close_channel()  # pppd needs the port to itself
            self._spawn(self._run_ppp(action.port))
        elif isinstance(action, ev.StopPpp):
            self._spawn(self.ppp.stop())
        elif isinstance(action, ev.ResetModem):
            self._spawn(self._reset_modem(self.gen))
        elif isinstance(action, ev.UsbRebind):
            self._spawn(self._usb("usb_rebind", self.usb.rebind, action.usb_path))
        elif isinstance(action, ev.PortPowerCycle):
            self._spawn(self._usb("port_power", self.usb.power_cycle, action.usb_path))
        elif isinstance(action, ev.Reboot):
            if self.reboot_log is not None:
                self.reboot_log.save(self.state.reboots)
            self.rebooter.reboot(action.reason)

    def _cancel_timer(self, name: str) -> None:
        handle = self.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _close_channel(self) -> None:
        self.gen += 1
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    async def _cmd(self, command: str, timeout: float | None = None,
                   label: str | None = None) -> list[str]:
        if self.channel is None:
            raise PortGone(self.state.port or "modem", "port not open")
        return await self.channel.command(command, timeout or self.at_timeout, label)

    async def _open(self, port: str, gen: int) -> None:
        try:
            serial = self.opener(port)
        except PortGone as exc:
            self._post_if(gen, ev.PortLost(exc.reason))
            return
        except OSError as exc:
            self._post_if(gen, ev.PortLost(str(exc)))
            return
        if gen != self.gen:
            serial.close()
            return
        self.gen += 1
        gen = self.gen
        self.last_reg.clear()  # a fresh port: the first URC of each kind counts again
        channel = AtChannel(serial, port, self._urc,
                            lambda gone: self._post_if(gen, ev.PortLost(gone.reason)))
        self.channel = channel
        channel.start()
        try:
            for _ in range(3):  # a stick that just re-enumerated may need a moment
                if await channel.probe(min(1.0, self.at_timeout)):
                    break
            else:
                self._post_if(gen, ev.AtFailed("AT", "no answer to AT", silent=True))
                return
            await self._cmd("ATE0")
            await self._optional("AT+CMEE=1")
            maker = await self._identity("AT+CGMI")
            model = await self._identity("AT+CGMM")
            imei = await self._identity("AT+CGSN")
            self.info.update(manufacturer=maker, model=model)
            key = imei or port
            if "ZTE" in maker.upper() and key not in self.zcdrun_sent:
                # ZTE sticks boot as a CD-ROM until told otherwise; once per stick is enough
                # (it is stored in the stick), and usb-modeswitch handles the first boot.
                self.zcdrun_sent.add(key)
                LOG.info("modem: sending AT+ZCDRUN=8 so the ZTE stick stops its CD-ROM")
                await self._optional("AT+ZCDRUN=8")
            for kind in REG_PREFIXES:  # location-reporting URCs (n=2); 3G sticks lack CEREG
                await self._optional(f"AT{kind}=2")
            self._post_if(gen, ev.PortReady(maker, model))
        except AtTimeout as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
        except PortGone:
            pass  # on_gone already posted PortLost
        except AtError as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc)))

    async def _optional(self, command: str) -> list[str] | None:
        try:
            return await self._cmd(command)
        except AtError as exc:
            LOG.info("modem: %s", exc)
            self._error(str(exc))
            return None

    async def _identity(self, command: str) -> str:
        lines = await self._optional(command)
        try:
            return parse_identity(command, lines or [])
        except ValueError:
            return ""

    async def _query_sim(self, gen: int) -> None:
        try:
            lines = await self._cmd("AT+CPIN?", 10.0)
            sim = pick(lines, "+CPIN", parse_cpin) or SimState.OTHER
        except CmeError as exc:
            self._error(str(exc))
            sim = (SimState.MISSING if exc.code in CME_SIM_MISSING
                   else SimState.NOT_READY if exc.code == CME_SIM_BUSY
                   else SimState.PIN if exc.code == 11
                   else SimState.PUK if exc.code == 12 else SimState.OTHER)
        except AtTimeout as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
            return
        except (AtError, PortGone) as exc:
            self._post_if(gen, ev.AtFailed("AT+CPIN?", str(exc)))
            return
        self.info["sim"] = sim.value
        self._post_if(gen, ev.SimReport(sim))

    async def _enter_pin(self, gen: int) -> None:
        pin = self.cfg.pin.reveal() if self.cfg.pin is not None else ""
        try:
            await self._cmd(f'AT+CPIN="{pin}"', 10.0, label="AT+CPIN=<pin>")
        except CmeError as exc:
            self._post_if(gen, ev.PinRejected(exc.code, str(exc)))
            return
        except (AtError, AtTimeout, PortGone) as exc:
            # Did the SIM see it? Unknown, so count it as a rejection: a second wrong try
            # would bring the SIM closer to PUK.
            code = CME_INCORRECT_PASSWORD if isinstance(exc, AtError) else -1
            self._post_if(gen, ev.PinRejected(code, str(exc)))
            return
        await asyncio.sleep(1.0)  # the SIM needs a moment before +CPIN? says READY
        self._post_if(gen, ev.PinAccepted())

    async def _registrations(self) -> list[Registration]:
        out = []
        for kind in REG_PREFIXES:
            lines = await self._optional(f"AT{kind}?") or []
            reg = pick(lines, kind + ":", lambda ln: parse_registration(ln, read_reply=True))
            if reg is not None:
                out.append(reg)
        return out

    async def _query_registration(self, gen: int) -> None:
        try:
            regs = await self._registrations()
        except AtTimeout as exc:
            self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
            return
        except PortGone:
            return
        if not regs:
            return
        best = next((r for r in regs if r.stat.registered),
                    next((r for r in regs if r.stat is RegStat.DENIED), regs[0]))
        self._note_registration(best)
        self._post_if(gen, ev.RegistrationReport(best))

    def _note_registration(self, reg: Registration) -> None:
        self.info["registration"] = reg.stat.name.lower()
        if reg.access_tech:
            self.info["access_tech"] = reg.access_tech

    def _urc(self, line: str) -> None:
        head = line.partition(":")[0].strip().upper()
        try:
            if head in REG_PREFIXES:
                reg = parse_registration(line, read_reply=False)
                self._note_registration(reg)
                if self.last_reg.get(reg.kind) is not reg.stat:  # storms repeat themselves
                    self.last_reg[reg.kind] = reg.stat
                    self.post(ev.RegistrationReport(reg))
            elif head in ("+ZPAS", "^MODE"):
                self.info["access_tech"] = parse_vendor_access_tech(line)
        except ValueError as exc:
            LOG.debug("modem: unreadable URC: %s", exc)

    async def _run_ppp(self, port: str) -> None:
        def up(interface: str, address: str) -> None:
            self.post(ev.PppUp(interface, address))

        try:
            status = await self.ppp.run(port, up)
        except ModemError as exc:
            self._error(str(exc))
            status = 1
        self.post(ev.PppExited(status))

    async def _reset_modem(self, gen: int) -> None:
        try:
            await self._cmd("AT+CFUN=1,1", 2 * self.at_timeout)
        except PortGone:
            return  # the stick often drops the port before it answers: that is the reset
        except (AtError, AtTimeout) as exc:
            self._post_if(gen, ev.ActionFailed("modem_reset", str(exc)))
            return
        if gen == self.gen:
            self._close_channel()  # it is restarting; the machine reopens after settling

    async def _usb(self, name: str, fn: Callable[[str], None], usb_path: str) -> None:
        try:
            await asyncio.to_thread(fn, usb_path)
        except PowerRefused as exc:
            self.post(ev.ActionFailed(name, str(exc), permanent=True))
        except UsbPowerError as exc:
            self.post(ev.ActionFailed(name, str(exc)))

    # -- status

    def _error(self, text: str) -> None:
        self.info["last_error"] = text

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.poll()

    async def poll(self) -> None:
        """Refresh signal, operator and registration while the port is open, then report."""
        if self.channel is not None and self.state.phase in (
                Phase.REGISTERING, Phase.DENIED, Phase.DIALING, Phase.CONNECTED):
            gen = self.gen
            try:
                sig = pick(await self._optional("AT+CSQ") or [], "+CSQ", parse_csq)
                if sig is not None:
                    self.info["signal_dbm"] = sig.dbm
                op = pick(await self._optional("AT+COPS?") or [], "+COPS", parse_cops)
                self.info["operator"] = op.name if op is not None else None
                if self.state.phase in (Phase.REGISTERING, Phase.DENIED):
                    await self._query_registration(gen)
            except AtTimeout as exc:
                self._error(str(exc))
                self._post_if(gen, ev.AtFailed(exc.command, str(exc), silent=True))
            except (PortGone, ValueError) as exc:
                self._error(str(exc))
        self.report()

    def report(self) -> None:
        """Tell the status snapshot where the modem is."""
        s = self.state
        rx, tx = self.counters(s.interface) if s.interface else (None, None)
        rung = s.pending_rung.value if s.pending_rung else None
        self.status.report(
            PART, s.phase.value, reason=s.reason, port=s.port,
            manufacturer=self.info.get("manufacturer"), model=self.info.get("model"),
            sim=self.info.get("sim"), signal_dbm=self.info.get("signal_dbm"),
            operator=self.info.get("operator"), access_tech=self.info.get("access_tech"),
            registration=self.info.get("registration"), interface=s.interface,
            address=s.address, bytes_in=rx, bytes_out=tx, ladder_rung=rung,
            ladder_counts=s.ladder_counts, last_error=s.last_error or self.info.get(
                "last_error"))

