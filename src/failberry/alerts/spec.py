"""Parsers for the `[alerts]` config values (kept here, free of heavy imports, so the config
module can use them): phone numbers, webhook specs, quiet hours, warning percentages."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_PHONE = re.compile(r"^\+?[0-9]{3,20}$")
_HHMM = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


class WebhookFormat(enum.StrEnum):
    """The JSON shape a webhook receives."""

    NTFY = "ntfy"
    SLACK = "slack"
    JSON = "json"


@dataclass(frozen=True)
class Webhook:
    """`"ntfy https://ntfy.sh/topic"`: a format and a URL."""

    format: WebhookFormat
    url: str

    def host(self) -> str:
        """The URL's host: what logs and status show (the path may hold a token)."""
        return urlsplit(self.url).hostname or "?"


def phone(value: str) -> str:
    """A phone number; spaces, dots, dashes and parentheses are dropped (`+49 170 1234567`)."""
    digits = re.sub(r"[\s.()\-/]", "", value)
    if not _PHONE.match(digits):
        raise ValueError(f"{value!r} is not a phone number (write it as +<country><number>)")
    return digits


def webhook(value: str) -> str:
    """`FORMAT URL` with FORMAT one of ntfy, slack, json (checked; kept as written)."""
    parse_webhook(value)
    return value


def parse_webhook(value: str) -> Webhook:
    """The Webhook a `FORMAT URL` string names."""
    fmt, _, url = value.strip().partition(" ")
    url = url.strip()
    try:
        kind = WebhookFormat(fmt)
    except ValueError:
        raise ValueError(f"{value!r} must start with a format: "
                         f"{', '.join(f.value for f in WebhookFormat)}, then the URL") from None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r}: {url!r} is not an http:// or https:// URL")
    if kind is WebhookFormat.NTFY and parts.path.strip("/") == "":
        raise ValueError(f"{value!r}: an ntfy URL names the topic (https://ntfy.sh/TOPIC)")
    return Webhook(kind, url)


def quiet_hours(value: str) -> str:
    """`"22:00-07:00"` (local time; may wrap past midnight), or empty for none."""
    if value:
        parse_quiet_hours(value)
    return value


def parse_quiet_hours(value: str) -> tuple[int, int] | None:
    """Minutes after midnight (start, end), or None for an empty value."""
    if not value:
        return None
    start, sep, end = value.partition("-")
    ms, me = _HHMM.match(start.strip()), _HHMM.match(end.strip())
    if not sep or ms is None or me is None:
        raise ValueError(f"{value!r} is not a time range such as \"22:00-07:00\"")
    a = int(ms.group(1)) * 60 + int(ms.group(2))
    b = int(me.group(1)) * 60 + int(me.group(2))
    if a == b:
        raise ValueError(f"{value!r} starts and ends at the same time")
    return a, b


def percent_list(value: object) -> tuple[float, ...]:
    """A list of percentages above 0 and up to 200, sorted."""
    if not isinstance(value, list):
        raise ValueError("must be a list of percentages such as [80, 100]")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 < item <= 200:
            raise ValueError(f"item {i + 1} must be a number above 0 and up to 200")
        out.append(float(item))
    return tuple(sorted(set(out)))
