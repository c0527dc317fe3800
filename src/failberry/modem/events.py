"""What the modem state machine hears (events) and what it asks for (actions). Plain frozen
values: the driver turns I/O into events and actions into I/O."""

from __future__ import annotations

from dataclasses import dataclass

from failberry.modem.ladder import Rung
from failberry.modem.parsers import Registration, SimState

# -- events


@dataclass(frozen=True)
class DeviceAdded:
    """A modem appeared: `port` answers AT; `data_port` carries PPP (often another tty)."""

    port: str
    data_port: str | None = None
    usb_path: str | None = None  # sysfs device name such as "1-1.2"
    data: str = "ppp"  # the data path (`datapath.DataPath` value)
    net: str | None = None  # the stick's network interface (ncm, ecm, hilink)


@dataclass(frozen=True)
class DeviceRemoved:
    """The modem's port went away (udev remove, or the path vanished)."""

    port: str


@dataclass(frozen=True)
class PortLost:
    """Reading or opening the AT port failed."""

    reason: str


@dataclass(frozen=True)
class PortReady:
    """The port answered and was set up (echo off, verbose errors, registration URCs on)."""

    manufacturer: str = ""
    model: str = ""


@dataclass(frozen=True)
class AtFailed:
    """A command the machine asked for failed; `silent` when the modem did not answer."""

    command: str
    error: str
    silent: bool = False


@dataclass(frozen=True)
class SimReport:
    """What +CPIN? said (CME 10/13/15 come in as MISSING)."""

    sim: SimState


@dataclass(frozen=True)
class PinAccepted:
    """AT+CPIN=<pin> answered OK."""


@dataclass(frozen=True)
class PinRejected:
    """AT+CPIN=<pin> failed; `code` is the CME code (16: incorrect password)."""

    code: int
    error: str


@dataclass(frozen=True)
class PinUnsure:
    """AT+CPIN=<pin> got no clear answer (silence, a plain ERROR) and the SIM's PIN counter
    did not go down: the SIM may never have seen it, so this is not a rejection. `seen`
    False when the counter shows the SIM did not count it."""

    error: str
    seen: bool | None = None


@dataclass(frozen=True)
class RegistrationReport:
    """A +CREG/+CGREG/+CEREG read reply or URC."""

    registration: Registration


@dataclass(frozen=True)
class PppUp:
    """pppd reported the link up with a local address."""

    interface: str
    address: str


@dataclass(frozen=True)
class PppExited:
    """pppd exited with `status` (man pppd, EXIT STATUS); or a bearer ended with a status of
    the same meaning and its own words in `why`."""

    status: int
    why: str = ""


@dataclass(frozen=True)
class TrafficFailed:
    """The probes say the mobile uplink is connected but no traffic passes."""

    reason: str


@dataclass(frozen=True)
class ActionFailed:
    """A recovery rung's action could not be done; `permanent` if it never can for this
    stick (refused for safety): the machine then skips that rung for good."""

    rung: Rung
    reason: str
    permanent: bool = False


@dataclass(frozen=True)
class TaskFailed:
    """A driver task died of an unexpected exception (a bug): a fault, not a 120 s wait."""

    task: str
    error: str


@dataclass(frozen=True)
class TimerFired:
    """A timer the machine started has run out."""

    name: str


Event = (DeviceAdded | DeviceRemoved | PortLost | PortReady | AtFailed | SimReport
         | PinAccepted | PinRejected | PinUnsure | RegistrationReport | PppUp | PppExited
         | TrafficFailed | ActionFailed | TaskFailed | TimerFired)

# -- actions


@dataclass(frozen=True)
class OpenPort:
    """(Re)open the AT port and set it up; answer PortReady, PortLost or AtFailed."""

    port: str


@dataclass(frozen=True)
class ClosePort:
    """Let go of the AT port."""


@dataclass(frozen=True)
class QuerySim:
    """Ask AT+CPIN?; answer SimReport or AtFailed."""


@dataclass(frozen=True)
class EnterPin:
    """Send the configured PIN once; answer PinAccepted or PinRejected."""


@dataclass(frozen=True)
class QueryRegistration:
    """Ask AT+CREG?/+CGREG?/+CEREG?; answer RegistrationReport or AtFailed."""


@dataclass(frozen=True)
class StartPpp:
    """Write the peer/chat files and run pppd on `port`; answer PppUp, then PppExited."""

    port: str


@dataclass(frozen=True)
class StopPpp:
    """Terminate pppd (it then exits 5); answer PppExited."""


@dataclass(frozen=True)
class ResetModem:
    """AT+CFUN=1,1: the modem restarts and usually re-enumerates."""


@dataclass(frozen=True)
class UsbRebind:
    """Unbind and rebind the USB device in sysfs."""

    usb_path: str


@dataclass(frozen=True)
class PortPowerCycle:
    """Cut and restore power on the hub port the modem sits behind."""

    usb_path: str


@dataclass(frozen=True)
class Reboot:
    """Reboot the whole box: the last rung."""

    reason: str


@dataclass(frozen=True)
class StartTimer:
    """(Re)start the named timer."""

    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    """Stop the named timer if it runs."""

    name: str


Action = (OpenPort | ClosePort | QuerySim | EnterPin | QueryRegistration | StartPpp | StopPpp
          | ResetModem | UsbRebind | PortPowerCycle | Reboot | StartTimer | CancelTimer)
