"""A small, hardened asyncio HTTP/1.1 server for the health endpoint.

Four routes do not need a framework, and owning the parser lets us bound everything a client
controls: the request line and head sizes, how long a head may take to arrive (a slowloris
client sending a byte every few seconds does not extend it), how long a keep-alive connection
may idle, how many connections exist (the least recently useful is evicted for a new one), and
how much unread output a client that never reads can pin (reading stops until it drains).
Requests never carry a body here. Peers are never resolved (no reverse DNS). Each batch of
responses leaves in one `write` on a TCP_NODELAY socket, so there are no Nagle stalls.

It is an `asyncio.Protocol` rather than streams: about three times the requests per second on
the Pi's small cores, which matters when a checker or a load test hammers `/health`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

LOG = logging.getLogger(__name__)

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS",
                      b"TRACE", b"CONNECT"})
_CACHE_MAX = 256
_CACHE_BODY_MAX = 512
_BATCH_MAX = 32  # pipelined requests answered per turn of the loop
_SNDBUF = 64 * 1024  # kernel send buffer: bounds what a client that never reads can pin


@dataclass(frozen=True)
class Limits:
    """What one client may cost us."""

    max_request_line: int = 2048
    max_head: int = 8192  # request line plus headers
    head_timeout: float = 10.0  # a request head must arrive within this once it starts
    idle_timeout: float = 30.0  # a keep-alive connection with nothing in flight
    max_connections: int = 1024
    write_high_water: int = 64 * 1024  # stop reading a client that does not read its answers


@dataclass(frozen=True)
class Response:
    """What a handler returns; the server adds the status line and headers."""

    code: int
    body: bytes
    content_type: str = "application/json"


# (method, path without query, peer address) -> Response
Handler = Callable[[str, str, str], Response]


@dataclass
class HttpStats:
    """Counters for /metrics."""

    requests: Counter[int] = field(default_factory=Counter)  # by status code
    connections: int = 0
    accepted: int = 0
    evicted: int = 0
    timed_out: int = 0


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; the constant is 15 on every arch


def _listening_socket(host: str, port: int) -> socket.socket | None:
    """A bound TCP socket for an IP address (None for a host name), free to bind an address
    not yet configured."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if addr.version == 6:  # as asyncio binds "::": IPv6 only
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serves `handler` on host:port with `limits`."""

    def __init__(self, handler: Handler, host: str, port: int,
                 limits: Limits | None = None, stats: HttpStats | None = None) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        self.stats = stats or HttpStats()
        # Insertion order is "least recently useful first": a connection moves to the end
        # each time it completes a request, so eviction hits idle and slow clients.
        self.conns: dict[_Conn, None] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._cache: dict[tuple[Response, bool, bool, bool], bytes] = {}

    async def start(self) -> None:
        """Bind and listen; raises OSError if the address is taken. An address the machine
        does not have yet is fine (IP_FREEBIND): at boot the supervisor starts beside
        systemd-networkd, which gives the LAN its address a moment later."""
        loop = asyncio.get_running_loop()
        sock = _listening_socket(self.host, self.port)
        if sock is None:  # a name, not an address: asyncio resolves and binds it
            self._server = await loop.create_server(
                lambda: _Conn(self), self.host, self.port, reuse_address=True, backlog=1024)
        else:
            self._server = await loop.create_server(lambda: _Conn(self), sock=sock,
                                                    backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep(), name="http-sweeper")
        LOG.info("health endpoint listening on http://%s:%d/health", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for conn in list(self.conns):
                conn.close()
            await self._server.wait_closed()
            self._server = None

    async def _sweep(self) -> None:
        """Close connections past their deadline, once a second (cheaper than a timer each)."""
        while True:
            await asyncio.sleep(min(1.0, self.limits.head_timeout / 4))
            now = time.monotonic()
            for conn in [c for c in self.conns if c.deadline < now]:
                self.stats.timed_out += 1
                conn.time_out()

    def added(self, conn: _Conn) -> None:
        """A connection arrived; evict the least recently useful one when at the cap."""
        self.stats.accepted += 1
        while len(self.conns) >= self.limits.max_connections:
            victim = next(iter(self.conns))
            self.stats.evicted += 1
            victim.close(abort=True)
        self.conns[conn] = None
        self.stats.connections = len(self.conns)

    def removed(self, conn: _Conn) -> None:
        """A connection is gone."""
        self.conns.pop(conn, None)
        self.stats.connections = len(self.conns)

    def useful(self, conn: _Conn) -> None:
        """`conn` completed a request: it moves to the back of the eviction queue."""
        if conn in self.conns:
            del self.conns[conn]
            self.conns[conn] = None

    def render(self, resp: Response, head_only: bool, keep: bool, http10: bool,
               extra: str = "") -> bytes:
        """The whole response as bytes; small ones are cached (health answers repeat)."""
        self.stats.requests[resp.code] += 1
        key = (resp, head_only, keep, http10)
        cacheable = not extra and len(resp.body) <= _CACHE_BODY_MAX
        if cacheable:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        if keep:
            conn_hdr = "Connection: keep-alive\r\n" if http10 else ""
        else:
            conn_hdr = "Connection: close\r\n"
        head = (f"HTTP/1.1 {resp.code} {_REASONS.get(resp.code, 'Unknown')}\r\n"
                f"Content-Type: {resp.content_type}\r\n"
                f"Content-Length: {len(resp.body)}\r\n"
                f"Cache-Control: no-store\r\n{conn_hdr}{extra}\r\n").encode("latin-1")
        out = head if head_only else head + resp.body
        if cacheable:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = out
        return out


def error(code: int, message: str) -> Response:
    """A short JSON error body with the fixed word "fail"."""
    return Response(code, b'{"status":"fail","error":"' + message.encode() + b'"}\n')


class _Conn(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.peer = ""
        self.deadline = time.monotonic() + self.limits.head_timeout
        self.paused = False
        self.closing = False

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        self.server.added(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.removed(self)

    def pause_writing(self) -> None:
        # The client is not reading: stop reading its requests too. Its deadline is not
        # renewed meanwhile, so the sweeper drops it if it never drains.
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
            if self.buf:
                self._process(b"")

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.buf:
            # A new request starts: its head must be complete within head_timeout, however
            # slowly the bytes trickle in.
            self.deadline = time.monotonic() + self.limits.head_timeout
        self._process(data)

    # -- work --

    def close(self, abort: bool = False) -> None:
        """Close now (abort: drop unsent output too)."""
        if self.transport is not None and not self.closing:
            self.closing = True
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
            self.server.removed(self)

    def time_out(self) -> None:
        """The sweeper found this connection past its deadline."""
        if self.buf and not self.paused and self.transport is not None and not self.closing:
            self.transport.write(self.server.render(error(408, "request timeout"), False,
                                                    False, False))
        self.close(abort=self.paused)

    def _process(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.buf and not self.closing and not self.paused and self._batch():
            # A deep pipeline: answer the rest on a later turn of the loop, so one client
            # cannot starve the others (or a checker's /health) of the loop.
            asyncio.get_running_loop().call_soon(self._process, b"")

    def _batch(self) -> bool:
        """Answer the complete requests in the buffer with one write; True if more may follow
        (we stopped at the write-size bound, not for want of a complete request)."""
        buf = self.buf
        out: list[bytes] = []
        size = 0
        keep = True
        more = False
        while buf:
            end = buf.find(b"\r\n\r\n", 0, self.limits.max_head + 4)
            if end < 0:
                reply = self._incomplete(buf)
                if reply is not None:
                    out.append(reply)
                    keep = False
                break
            head, buf = buf[:end], buf[end + 4:]
            reply, keep = self._request(head)
            out.append(reply)
            size += len(reply)
            if not keep:
                break
            if size >= self.limits.write_high_water or len(out) >= _BATCH_MAX:
                more = True  # write this much first; the rest waits if the client is slow
                break
        self.buf = buf if keep else b""
        if out and self.transport is not None:
            self.transport.write(b"".join(out))  # one send for the whole batch
            self.server.useful(self)
            self.deadline = time.monotonic() + (
                self.limits.head_timeout if self.buf else self.limits.idle_timeout)
        if not keep:
            self.close()
        return more and keep

    def _incomplete(self, buf: bytes) -> bytes | None:
        """A partial head: an error reply if it is already too big, else None (wait)."""
        lim = self.limits
        if len(buf) > lim.max_head:
            return self.server.render(error(431, "request head too large"), False, False, False)
        if len(buf) > lim.max_request_line and buf.find(b"\r\n", 0, lim.max_request_line) < 0:
            return self.server.render(error(414, "request line too long"), False, False, False)
        return None

    def _request(self, head: bytes) -> tuple[bytes, bool]:
        """One request head to (response bytes, keep the connection)."""
        render = self.server.render
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(lines[0]) > self.limits.max_request_line:
            return render(error(414, "request line too long"), False, False, False), False
        if len(parts) != 3 or parts[0] not in _METHODS or not parts[1].startswith(b"/"):
            return render(error(400, "bad request"), False, False, False), False
        method, target, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            return render(error(505, "HTTP/1.1 only"), False, False, False), False
        http10 = version == b"HTTP/1.0"
        connection = b""
        has_body = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            # RFC 9112 5.1: no whitespace between a field name and its colon.
            if not colon or not name or name != name.strip() or b" " in name:
                return render(error(400, "bad header"), False, False, False), False
            lname = name.lower()
            if lname == b"connection":
                connection = value.strip().lower()
            elif lname == b"transfer-encoding" or (
                    lname == b"content-length" and value.strip() != b"0"):
                has_body = True
        keep = b"keep-alive" in connection if http10 else b"close" not in connection
        if method not in (b"GET", b"HEAD"):
            # We never read request bodies, so a request that may have one ends the
            # connection: its bytes must not be taken for the next request.
            return render(error(405, "method not allowed"), False, False, http10,
                          "Allow: GET, HEAD\r\n"), False
        if has_body:
            return render(error(400, "no request body expected"), False, False, http10), False
        path = target.split(b"?", 1)[0].decode("latin-1")
        try:
            resp = self.server.handler(method.decode(), path, self.peer)
        except Exception:  # a bug in a route must not take the server down
            LOG.exception("handler failed for %s %s", method.decode(), path)
            resp = error(500, "internal error")
        return render(resp, method == b"HEAD", keep, http10), keep
