"""What the modem machine remembers: its phases, its timers' names and the state record."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from failberry.modem.ladder import RUNGS, Rung


class Phase(enum.StrEnum):
    """Where the modem is in its life."""

    ABSENT = "absent"
    PROBING = "probing"
    SIM_CHECK = "sim_check"
    PIN_SENT = "pin_sent"
    SIM_FAILED = "sim_failed"
    REGISTERING = "registering"
    DENIED = "denied"
    DIALING = "dialing"
    CONNECTED = "connected"
    LOST = "lost"
    RECOVERING = "recovering"
    RESETTING = "resetting"
    FAILED = "failed"
    REBOOTING = "rebooting"


# Timer names.
BACKOFF, REGISTRATION, DIAL, STABLE = "backoff", "registration", "dial", "stable"
SETTLE, RECHECK, SIM_RETRY, ABSENT_WAIT = "settle", "recheck", "sim_retry", "absent"
STEP = "step"  # a bound on probing + SIM check, whatever replies get lost on the way
REBOOT_WAIT = "reboot_wait"  # the reboot command succeeded, yet we still run
ALL_TIMERS = (BACKOFF, REGISTRATION, DIAL, STABLE, SETTLE, RECHECK, SIM_RETRY, ABSENT_WAIT,
              STEP, REBOOT_WAIT)



@dataclass(frozen=True)
class ModemState:
    """Everything the machine remembers; replaced, never mutated."""

    phase: Phase = Phase.ABSENT
    reason: str = "no modem found yet; waiting for one to be plugged in"
    port: str | None = None
    data_port: str | None = None
    usb_path: str | None = None
    pin_sent: bool = False  # entered since the port was (re)opened
    pin_rejected: bool = False  # sticky: a wrong PIN is never sent again
    pin_unsure: int = 0  # PIN entries whose outcome was never known (sticky, like the above)
    sim_retries: int = 0  # "SIM busy" answers in a row
    sim_rechecks: int = 0  # rechecks of an unusable SIM: the backoff exponent
    ppp_running: bool = False
    interface: str | None = None
    address: str | None = None
    connected_since: float | None = None
    tries: tuple[int, ...] = field(default=(0,) * len(RUNGS))
    attempts: int = 0  # rungs performed in this climb: the backoff exponent
    pending_rung: Rung | None = None
    # Rungs refused for good on this stick, with why (ActionFailed permanent, e.g. port power
    # with the Ethernet adapter on the hub): never climbed again, and shown in /status.
    refusals: tuple[tuple[Rung, str], ...] = ()
    reboots: tuple[float, ...] = ()  # wall times of reboots we asked for
    last_error: str | None = None

    @property
    def refused(self) -> frozenset[Rung]:
        """The rungs refused for good on this stick."""
        return frozenset(rung for rung, _ in self.refusals)

    @property
    def ladder_counts(self) -> dict[str, int]:
        """Tries per rung in the current climb."""
        return {r.value: n for r, n in zip(RUNGS, self.tries, strict=True)}
