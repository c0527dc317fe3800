"""The HTTP endpoint on port 9000: `/health` for DNS failover checkers, `/status` as JSON.

A deliberately small asyncio HTTP/1.1 server: four routes do not need a framework, and
owning the parser lets us bound every buffer and timeout."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

MAX_REQUEST_LINE = 2048
MAX_HEADERS = 8192
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 256

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 503:
            "Service Unavailable"}

Route = Callable[[str], tuple[int, dict[str, Any]]]


class HealthServer:
    """Serves `GET`/`HEAD` on a few JSON routes given as callables returning (code, body)."""

    def __init__(self, routes: dict[str, Route], host: str, port: int) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._active = 0

    async def start(self) -> None:
        """Bind and listen; raises OSError if the port is taken."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, limit=MAX_HEADERS
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        LOG.info("health endpoint listening on http://%s:%d/health", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _route(self, path: str) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0]
        for prefix, handler in self.routes.items():
            if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                return handler(path)
        return 404, {"status": "fail", "error": "not found"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= MAX_CONNECTIONS:
            writer.close()
            return
        self._active += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._active -= 1
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except TimeoutError:
            return False
        except asyncio.LimitOverrunError:
            await self._send(writer, 431, {"status": "fail", "error": "headers too large"},
                             False, False)
            return False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(lines[0]) > MAX_REQUEST_LINE or len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._send(writer, 400, {"status": "fail", "error": "bad request"}, False,
                             False)
            return False
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip().lower()
        keep = (headers.get("connection") != "close") if version == "HTTP/1.1" else (
            headers.get("connection") == "keep-alive")
        if method not in ("GET", "HEAD"):
            await self._send(writer, 405, {"status": "fail", "error": "method not allowed"},
                             False, keep)
            return keep
        code, body = self._route(target)
        await self._send(writer, code, body, method == "HEAD", keep)
        return keep

    async def _send(self, writer: asyncio.StreamWriter, code: int, body: dict[str, Any],
                    head_only: bool, keep: bool) -> None:
        payload = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        header = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'OK')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Cache-Control: no-store\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        # One write: header and body leave in one segment.
        writer.write(header if head_only else header + payload)
        await writer.drain()
