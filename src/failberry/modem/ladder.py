"""The recovery ladder's vocabulary and the tables it climbs by: the rungs, what each pppd
exit status means (man pppd, EXIT STATUS). The machine's clock is `failberry.clock`'s,
re-exported here for the modem modules that import it from this one."""

from __future__ import annotations

import enum

from failberry.clock import Clock, SystemClock

__all__ = [
    "PPP_EXIT",
    "RUNGS",
    "Clock",
    "PppOutcome",
    "Rung",
    "SystemClock",
    "describe_ppp_exit",
]


class Rung(enum.StrEnum):
    """The recovery ladder, lowest first."""

    REDIAL = "redial"
    MODEM_RESET = "modem_reset"
    USB_REBIND = "usb_rebind"
    PORT_POWER = "port_power"
    REBOOT = "reboot"


RUNGS = tuple(Rung)

class PppOutcome(enum.Enum):
    """What a pppd exit status means for us."""

    RETRY = "retry"  # a fault: climb the ladder
    REDIAL = "redial"  # not a fault (idle/connect-time limits): dial again now
    FATAL = "fatal"  # our setup is wrong; retrying cannot help
    AUTH = "auth"  # credentials refused: retry rarely, never climb to hardware


# man pppd, EXIT STATUS.
PPP_EXIT: dict[int, tuple[str, PppOutcome]] = {
    0: ("the peer terminated the link", PppOutcome.RETRY),
    1: ("an immediately fatal error occurred", PppOutcome.RETRY),
    2: ("an error in the options given", PppOutcome.FATAL),
    3: ("pppd is not setuid-root and the user is not root", PppOutcome.FATAL),
    4: ("the kernel does not support PPP", PppOutcome.FATAL),
    5: ("pppd was sent SIGINT, SIGTERM or SIGHUP", PppOutcome.RETRY),
    6: ("the serial port could not be locked", PppOutcome.RETRY),
    7: ("the serial port could not be opened", PppOutcome.RETRY),
    8: ("the connect script failed", PppOutcome.RETRY),
    9: ("the pty command could not be run", PppOutcome.FATAL),
    10: ("the PPP negotiation failed", PppOutcome.RETRY),
    11: ("the peer failed to authenticate itself", PppOutcome.RETRY),
    12: ("the link was idle", PppOutcome.REDIAL),
    13: ("the connect time limit was reached", PppOutcome.REDIAL),
    14: ("callback was negotiated", PppOutcome.RETRY),
    15: ("the peer is not responding to echo requests", PppOutcome.RETRY),
    16: ("the modem hung up", PppOutcome.RETRY),
    17: ("serial loopback was detected", PppOutcome.RETRY),
    18: ("the init script failed", PppOutcome.RETRY),
    19: ("we failed to authenticate to the peer", PppOutcome.AUTH),
}


def describe_ppp_exit(status: int) -> str:
    """`pppd exited 16: the modem hung up`."""
    text = PPP_EXIT.get(status, ("an undocumented status", PppOutcome.RETRY))[0]
    return f"pppd exited {status}: {text}"
