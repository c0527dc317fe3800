"""The mobile link's address as the outside sees it: one GET of a "what is my address" URL
(`uplink.mobile.public_address_url`, which answers with the caller's address as text), sent
from the link's own address so it leaves through that link. An answer other than the link's
address means the operator NATs it: nothing from outside can reach the Pi that way."""

from __future__ import annotations

import http.client
import ipaddress
from urllib.parse import urlsplit

from failberry.errors import FailberryError

MAX_BODY = 256


class PublicAddressError(FailberryError):
    """The URL gave no address; says why."""


def fetch(url: str, source: str, timeout: float = 10.0) -> str:
    """The address `url` answers when asked from `source` (blocking)."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers={"User-Agent": "failberry"})
        resp = conn.getresponse()
        body = resp.read(MAX_BODY)
    except (OSError, http.client.HTTPException) as e:
        raise PublicAddressError(f"{url}: {e}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise PublicAddressError(f"{url} answered {resp.status}")
    text = body.decode("ascii", "replace").strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise PublicAddressError(f"{url} did not answer an address: {text[:40]!r}") from None
