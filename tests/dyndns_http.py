"""A scripted HTTP server on loopback for the web-based dynamic DNS providers: it answers each
request with the next scripted reply, records what it received (client address, path, query,
headers, body), and keeps the "zone" the provider would publish so a verifier can read it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from failberry.dyndns.base import Record


@dataclass
class Seen:
    """One request as the server received it."""

    client: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


# A handler turns a request into (status, body text); it may change `zone`.
Handler = Callable[[Seen, dict[str, str]], tuple[int, str]]


@dataclass
class Server:
    """The running server's state."""

    handler: Handler
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    zone: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/nic/update"

    def lookup(self, record: Record) -> frozenset[str]:
        """A Verifier over the provider's own zone (its "authoritative servers")."""
        with self.lock:
            addr = self.zone.get(record.name)
        return frozenset({addr}) if addr else frozenset()


def _handler_class(server: Server) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(client=self.client_address[0], method=self.command, path=parts.path,
                        query={k: v[0] for k, v in parse_qs(parts.query).items()},
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=self.rfile.read(length) if length else b"")
            with server.lock:
                server.seen.append(seen)
                status, text = server.handler(seen, server.zone)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return H


@contextmanager
def serving(handler: Handler) -> Iterator[Server]:
    """Run a server on 127.0.0.1 (any port) for the `with` block."""
    state = Server(handler)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(state))
    state.port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, name="dyndns-http", daemon=True)
    t.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=10)


def json_body(seen: Seen) -> dict[str, Any]:
    """The request's JSON body (an empty dict if it is not JSON)."""
    try:
        data = json.loads(seen.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
