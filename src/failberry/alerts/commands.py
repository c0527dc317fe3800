"""SMS commands from allowlisted numbers: `status`, `failover [minutes]`, `failback
[minutes]`, `reboot`. Anything else, and anything from another number, is logged and
ignored (senders can be spoofed; keep the list short)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from failberry.alerts.spec import phone
from failberry.units import human_size

LOG = logging.getLogger(__name__)

VERBS = ("status", "failover", "failback", "reboot")
MAX_MINUTES = 24 * 60


@dataclass(frozen=True)
class Command:
    """A command an SMS asks for."""

    verb: str
    minutes: float | None = None


def parse(text: str) -> Command | None:
    """The command in an SMS body, or None (case and surrounding space ignored)."""
    words = text.strip().lower().split()
    if not words or words[0] not in VERBS:
        return None
    if len(words) == 1:
        return Command(words[0])
    if len(words) == 2 and words[0] in ("failover", "failback"):
        try:
            minutes = float(words[1])
        except ValueError:
            return None
        if 0 < minutes <= MAX_MINUTES:
            return Command(words[0], minutes)
    return None


def allowed(sender: str, allowlist: tuple[str, ...]) -> bool:
    """Whether `sender` (as the network gave it) is on the list."""
    try:
        return phone(sender) in allowlist
    except ValueError:
        return False  # an alphanumeric sender is never a person on the list


def summary(doc: Mapping[str, Any]) -> str:
    """One SMS (at most 160 characters) from a /status document."""
    words = [f"failberry {doc.get('status', '?')}"]
    active = doc.get("active_uplink")
    ups = doc.get("uplinks") or {}
    if isinstance(ups, Mapping) and ups:
        words.append(f"active {active or 'none'}")
        words += [f"{n} {'up' if isinstance(u, Mapping) and u.get('up') else 'DOWN'}"
                  for n, u in ups.items()]
    modem = doc.get("modem")
    if isinstance(modem, Mapping):
        sig = modem.get("signal_dbm")
        words.append(f"modem {modem.get('state', '?')}" + (f" {sig}dBm" if sig is not None
                                                           else ""))
    data = doc.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("used_bytes"), int | float):
        text = f"data {human_size(data['used_bytes'])}"
        if data.get("cap_bytes"):
            text += f"/{human_size(data['cap_bytes'])}"
        words.append(text)
    return ", ".join(words)[:160]
