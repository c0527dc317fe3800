"""What the Pi health part tells the rest of the supervisor on the bus.

The alerts part subscribes to `HealthAlert` and tells the admin; the part also keeps the last
few in its status report. They are rate-limited per kind (`[pihealth] alert_interval`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AlertKind(enum.StrEnum):
    """What an alert is about."""

    UNDERVOLTAGE = "undervoltage"
    HEAT = "heat"
    SD_ERROR = "sd_error"
    ROOT_READONLY = "root_readonly"
    MODEM_POWER = "modem_power"  # the modem ladder climbed shortly after under-voltage


class Severity(enum.StrEnum):
    """How urgent: critical alerts are sent even in quiet hours."""

    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class HealthAlert:
    """Something about the Pi itself the admin should hear about."""

    kind: AlertKind
    severity: Severity
    message: str  # one line, ready to send
    at: float  # wall clock
    held_back: int = 0  # alerts of this kind suppressed by the rate limit since the last one
