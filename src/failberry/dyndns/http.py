"""The HTTP seam for the web-based providers: one request, sent from a chosen local address.

Binding the source matters: many providers publish the address a request comes *from*, and
with two uplinks only the source address makes policy routing send it out of the uplink
whose address we are publishing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import requests  # type: ignore[import-untyped,unused-ignore]
from requests.adapters import HTTPAdapter  # type: ignore[import-untyped,unused-ignore]

from failberry.errors import FailberryError

LOG = logging.getLogger(__name__)


class HttpFailed(FailberryError):
    """No HTTP answer at all (connect, TLS, timeout); names the URL (never its credentials)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


@dataclass(frozen=True)
class HttpReply:
    """The parts of an HTTP answer the providers read."""

    status: int
    text: str


class HttpClient(Protocol):
    """Sends one request from `source` (None: any local address)."""

    def request(self, method: str, url: str, *, source: str | None, timeout: float,
                params: dict[str, str] | None = None, json: dict[str, Any] | None = None,
                data: bytes | None = None, auth: tuple[str, str] | None = None,
                headers: dict[str, str] | None = None) -> HttpReply:
        """One request; raises HttpFailed when no answer arrives."""
        ...


class _SourceAdapter(HTTPAdapter):  # type: ignore[misc,unused-ignore]
    """An adapter whose connection pools bind every socket to one local address."""

    def __init__(self, source: str) -> None:
        self._source = source
        super().__init__(max_retries=0)  # the updater owns retries and their backoff

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(connections, maxsize, block, **kwargs)


class RequestsClient:
    """The real client: a `requests` session per source address, proxies from the
    environment ignored (a proxy would make the source binding meaningless)."""

    def __init__(self) -> None:
        self._sessions: dict[str | None, Any] = {}

    def _session(self, source: str | None) -> Any:
        s = self._sessions.get(source)
        if s is None:
            s = requests.Session()
            s.trust_env = False
            if source is not None:
                adapter = _SourceAdapter(source)
                s.mount("http://", adapter)
                s.mount("https://", adapter)
            self._sessions[source] = s
        return s

    def request(self, method: str, url: str, *, source: str | None, timeout: float,
                params: dict[str, str] | None = None, json: dict[str, Any] | None = None,
                data: bytes | None = None, auth: tuple[str, str] | None = None,
                headers: dict[str, str] | None = None) -> HttpReply:
        """One request with connect and read timeouts; HttpFailed when nothing came back."""
        try:
            r = self._session(source).request(method, url, params=params, json=json, data=data,
                                              auth=auth, headers=headers,
                                              timeout=(timeout, timeout), allow_redirects=False)
        except requests.RequestException as e:
            # str(e) from urllib3 names host and path but never the Authorization header.
            raise HttpFailed(url, f"{type(e).__name__}: {_first_line(str(e))}") from None
        return HttpReply(status=int(r.status_code), text=str(r.text))

    def close(self) -> None:
        """Close every pooled connection."""
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]
