"""What every channel is: a name, a policy for its outbox, and `send`."""

from __future__ import annotations

from typing import Protocol

from failberry.alerts.model import Alert
from failberry.alerts.outbox import Policy
from failberry.errors import FailberryError


class ChannelError(FailberryError):
    """A message could not be delivered on a channel (it will be retried)."""

    def __init__(self, channel: str, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(f"alert channel {channel}: {reason}")


class Channel(Protocol):
    """A way to tell the admin."""

    name: str
    policy: Policy

    async def send(self, alert: Alert, text: str) -> None:
        """Deliver `text` (the alert's message with its count); ChannelError if it failed."""
