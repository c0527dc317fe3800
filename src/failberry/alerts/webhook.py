"""Webhooks: an HTTP POST of a small JSON document, in the shape ntfy, Slack or a generic
receiver takes. The request goes out by the default route, i.e. whichever uplink is active."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from failberry.alerts.channel import ChannelError
from failberry.alerts.model import Alert, Severity
from failberry.alerts.outbox import Policy
from failberry.alerts.spec import Webhook, WebhookFormat

LOG = logging.getLogger(__name__)

# ntfy priorities 1 (min) to 5 (max); tags become emoji there.
_NTFY_PRIORITY = {Severity.INFO: 3, Severity.WARNING: 4, Severity.CRITICAL: 5}
_NTFY_TAGS = {Severity.INFO: "information_source", Severity.WARNING: "warning",
              Severity.CRITICAL: "rotating_light"}


class HttpPost(Protocol):
    """The HTTP seam: POST JSON, return the status code (raise OSError-like on no answer)."""

    def post_json(self, url: str, body: dict[str, Any], timeout: float) -> int:
        """POST `body` as JSON to `url`; the response status."""


class RequestsPost:
    """HttpPost with requests."""

    def post_json(self, url: str, body: dict[str, Any], timeout: float) -> int:
        """POST with requests; connection errors become OSError."""
        import requests  # type: ignore[import-untyped,unused-ignore]

        try:
            resp = requests.post(url, json=body, timeout=timeout,
                                 headers={"User-Agent": "failberry-alerts"})
        except requests.RequestException as e:
            # The message quotes the URL's path, which may be the token (Slack): leave it out.
            path = urlsplit(url).path
            text = str(e).replace(path, "/...") if len(path) > 1 else str(e)
            raise OSError(text) from None
        resp.close()
        return int(resp.status_code)


def document(hook: Webhook, alert: Alert, text: str, host: str) -> tuple[str, dict[str, Any]]:
    """The URL to POST to and the JSON body for `hook`'s format."""
    title = f"failberry {host}: {alert.event.value}"
    if hook.format is WebhookFormat.NTFY:
        # ntfy's JSON publishing: POST to the server root with the topic in the body.
        parts = urlsplit(hook.url)
        topic = parts.path.strip("/")
        root = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
        return root, {"topic": topic, "title": title, "message": text,
                      "priority": _NTFY_PRIORITY[alert.severity],
                      "tags": [_NTFY_TAGS[alert.severity], alert.event.value]}
    if hook.format is WebhookFormat.SLACK:
        return hook.url, {"text": f"*{title}*\n{text}"}
    return hook.url, {"host": host, "event": alert.event.value,
                      "severity": alert.severity.name.lower(), "message": text,
                      "uplink": alert.uplink, "previous": alert.previous,
                      "reason": alert.reason, "at": alert.at, "fields": dict(alert.fields)}


class WebhookChannel:
    """One webhook URL."""

    def __init__(self, name: str, hook: Webhook, policy: Policy, *, timeout: float,
                 http: HttpPost | None = None, host: str | None = None) -> None:
        self.name = name
        self.hook = hook
        self.policy = policy
        self.timeout = timeout
        self.http = http or RequestsPost()
        self.host = host or socket.gethostname()
        # TLS checks the certificate's dates: not before the clock is right (timegate).
        self.needs_time = hook.url.lower().startswith("https:")

    async def send(self, alert: Alert, text: str) -> None:
        """POST the document; a non-2xx answer or no answer is a ChannelError."""
        url, body = document(self.hook, alert, text, self.host)
        try:
            code = await asyncio.to_thread(self.http.post_json, url, body, self.timeout)
        except OSError as e:
            raise ChannelError(self.name, f"POST to {self.hook.host()} failed: {e}") from None
        if not 200 <= code < 300:
            raise ChannelError(self.name, f"{self.hook.host()} answered HTTP {code}")
        LOG.debug("%s: %s answered %d", self.name, self.hook.host(), code)
