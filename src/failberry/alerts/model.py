"""What the alerts part tells: one `Alert` per fact worth a message, with the key that groups
repeats of the same fact (a flapping link is one key) and how urgent it is."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """Critical alerts go out even in quiet hours."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2


class Event(enum.StrEnum):
    """The kinds of alert (FAILBERRY_EVENT for hook scripts)."""

    FAILOVER = "failover"
    FAILBACK = "failback"
    NO_UPLINK = "no_uplink"
    UPLINK_BACK = "uplink_back"
    MOBILE_LOST = "mobile_lost"
    MOBILE_BACK = "mobile_back"
    MODEM_RECOVERY = "modem_recovery"
    MODEM_REBOOT = "modem_reboot"
    SIM = "sim"
    DATA_CAP = "data_cap"
    DATA_FORECAST = "data_forecast"
    DYNDNS_BLOCKED = "dyndns_blocked"
    REBOOTED = "rebooted"
    PI_HEALTH = "pi_health"
    TEST = "test"


# Events that are repeats of one fact for de-duplication: every uplink switch is "uplink".
GROUP = {Event.FAILOVER: "uplink", Event.FAILBACK: "uplink", Event.NO_UPLINK: "uplink",
         Event.UPLINK_BACK: "uplink",
         Event.MOBILE_LOST: "mobile", Event.MOBILE_BACK: "mobile"}


@dataclass(frozen=True)
class Alert:
    """One message worth sending."""

    event: Event
    severity: Severity
    message: str  # one line, ready to send
    at: float  # wall clock
    uplink: str | None = None
    previous: str | None = None
    reason: str = ""
    key: str = ""  # de-duplication key; empty: derived from the event
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The de-duplication key."""
        return self.key or GROUP.get(self.event, self.event.value)

    def to_json(self) -> dict[str, Any]:
        """For the queue file."""
        return {"event": self.event.value, "severity": self.severity.name.lower(),
                "message": self.message, "at": self.at, "uplink": self.uplink,
                "previous": self.previous, "reason": self.reason, "key": self.key,
                "fields": dict(self.fields)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Alert:
        """Back from the queue file (KeyError/ValueError on a damaged entry)."""
        return cls(Event(raw["event"]), Severity[str(raw["severity"]).upper()],
                   str(raw["message"]), float(raw["at"]), raw.get("uplink"),
                   raw.get("previous"), str(raw.get("reason", "")), str(raw.get("key", "")),
                   {str(k): str(v) for k, v in (raw.get("fields") or {}).items()})
