"""The probes themselves: sockets bound to the uplink (ICMP echo, TCP connect, HTTP, DNS),
sent a round at a time, and the cache of the targets' addresses (`failberry.net.probes` holds
what they are judged by).

Every probe is bound to the uplink twice over: to its source address (so the policy rule for
that address picks the uplink's own routing table) and with SO_BINDTODEVICE (so a probe can
never leak out of another uplink when that table is missing)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import struct
import time
import urllib.parse
from collections.abc import Callable, Sequence

from failberry.net.probes import Binding, ProbeResult, Target

LOG = logging.getLogger(__name__)

def _bound_socket(binding: Binding, kind: socket.SocketKind, proto: int = 0) -> socket.socket:
    """A socket that can only leave through the uplink: its address and its device."""
    s = socket.socket(socket.AF_INET, kind, proto)
    try:
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                     binding.interface.encode() + b"\0")
        s.bind((binding.address, 0))
    except BaseException:
        s.close()
        raise
    return s


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request (type 8) with its checksum."""
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def is_echo_reply(data: bytes, *, raw: bool, ident: int, seq: int, payload: bytes) -> bool:
    """Whether `data`, read from an ICMP socket, answers our echo request `seq`.

    A raw socket's data starts with the IP header, and every raw ICMP socket on the host sees
    every echo reply: the identifier, sequence number and payload must all be ours. A datagram
    socket's identifier is rewritten by the kernel, which hands each socket only its own."""
    if raw:
        if not data:
            return False
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 8:
        return False
    kind, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[:8])
    return kind == 0 and rseq == seq and (not raw or rid == ident) and data[8:] == payload


class SocketProber:
    """Real probes. ICMP uses an unprivileged datagram socket where net.ipv4.ping_group_range
    allows it, a raw socket otherwise.

    The probes of both uplinks to every target are in flight at once, so nothing a reply is
    matched against may be shared between them: each probe takes its own sequence number and
    payload and compares replies with those (a shared "last sequence sent" let only the last
    probe of a round pass once replies came after the next probe was sent)."""

    def __init__(self, names: NameCache | None = None) -> None:
        self._seq = 0
        # Raw sockets share the host's echo identifiers with ping and other probers: ours is
        # random, and the sequence number and payload tell our own probes apart.
        self._ident = int.from_bytes(os.urandom(2), "big")
        self._dgram_ok: bool | None = None
        self._names = names or NameCache()

    async def round(self, binding: Binding, targets: Sequence[Target],
                    timeout: float) -> list[ProbeResult]:
        """Probe every target at once; one result each."""
        return list(await asyncio.gather(*(self.probe(binding, t, timeout) for t in targets)))

    async def probe(self, binding: Binding, target: Target, timeout: float) -> ProbeResult:
        """One probe; failures become results, never exceptions."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                if target.kind == "icmp":
                    await self._icmp(binding, target)
                elif target.kind == "tcp":
                    await self._tcp(binding, target, None)
                elif target.kind == "dns":
                    await self._dns(binding, target)
                else:
                    await self._tcp(binding, target, target.url)
        except TimeoutError:
            return ProbeResult(target.label, False, None, "timeout")
        except OSError as e:
            return ProbeResult(target.label, False, None, e.strerror or str(e))
        except ProbeFailed as e:
            return ProbeResult(target.label, False, None, str(e))
        return ProbeResult(target.label, True, time.monotonic() - start)

    def _icmp_socket(self, binding: Binding) -> tuple[socket.socket, bool]:
        if self._dgram_ok is not False:
            try:
                return _bound_socket(binding, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), True
            except PermissionError:
                self._dgram_ok = False
        return _bound_socket(binding, socket.SOCK_RAW, socket.IPPROTO_ICMP), False

    async def _icmp(self, binding: Binding, target: Target) -> None:
        loop = asyncio.get_running_loop()
        dst = await self._names.resolve(target.host)
        self._seq = seq = (self._seq + 1) & 0xFFFF  # from here on only the local `seq`
        payload = b"failberry" + struct.pack("!Hd", seq, time.monotonic())
        sock, dgram = self._icmp_socket(binding)
        with sock:
            await loop.sock_sendto(sock, echo_request(self._ident, seq, payload), (dst, 0))
            while True:
                data, (src, _) = await loop.sock_recvfrom(sock, 2048)
                if src == dst and is_echo_reply(data, raw=not dgram, ident=self._ident,
                                                seq=seq, payload=payload):
                    return

    async def _tcp(self, binding: Binding, target: Target, url: str | None) -> None:
        loop = asyncio.get_running_loop()
        dst = await self._names.resolve(target.host)
        sock: socket.socket | None = _bound_socket(binding, socket.SOCK_STREAM)
        assert sock is not None
        try:
            await loop.sock_connect(sock, (dst, target.port))
            if url is None:
                return
            ctx = ssl.create_default_context() if target.kind == "https" else None
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=ctx, server_hostname=target.host if ctx else None)
            sock = None  # the stream owns it now
            try:
                path = urllib.parse.urlsplit(url)
                req = (f"GET {path.path or '/'}{'?' + path.query if path.query else ''} "
                       f"HTTP/1.1\r\nHost: {path.netloc}\r\nUser-Agent: failberry-probe\r\n"
                       "Connection: close\r\n\r\n")
                writer.write(req.encode())
                await writer.drain()
                line = await reader.readline()
                parts = line.split()
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or \
                        not parts[1].isdigit():
                    raise ProbeFailed("not an HTTP reply")
                if int(parts[1]) >= 500:
                    raise ProbeFailed(f"HTTP {int(parts[1])}")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        finally:
            if sock is not None:
                sock.close()

    async def _dns(self, binding: Binding, target: Target) -> None:
        import dns.exception
        import dns.message

        loop = asyncio.get_running_loop()
        query = dns.message.make_query(".", "NS")
        with _bound_socket(binding, socket.SOCK_DGRAM) as sock:
            await loop.sock_sendto(sock, query.to_wire(), (target.host, target.port))
            while True:
                data, (src, _) = await loop.sock_recvfrom(sock, 65535)
                if src != target.host:
                    continue
                try:
                    reply = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    continue
                # Any answer, even REFUSED, proves the path; the resolver's health is not ours.
                if query.is_response(reply):
                    return


class ProbeFailed(Exception):
    """A probe got an answer that does not count."""


NAME_TTL = 300.0  # seconds a looked-up target address is used before it is looked up again


class NameCache:
    """Addresses of probe targets given by name.

    The lookup goes through the system resolver, whose queries leave by the active uplink, not
    by the probed one: while the active uplink's path is dead every lookup fails, and if that
    failed the backup's probes too, nothing would pass and failover would never happen. So a
    name is looked up before its first probe; after that the last address found is used, and
    refreshed in the background once it is older than `ttl`."""

    def __init__(self, ttl: float = NAME_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._addrs: dict[str, tuple[str, float]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def resolve(self, host: str) -> str:
        """The IPv4 address to probe for `host` (a literal address is its own)."""
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
        cached = self._addrs.get(host)
        if cached is None:
            addr = await self.lookup(host)
            self._addrs[host] = (addr, self._clock())
            return addr
        addr, when = cached
        loop = asyncio.get_running_loop()
        pending = self._refreshing.get(host)
        if self._clock() - when >= self.ttl and (
                pending is None or pending.done() or pending.get_loop() is not loop):
            # Held here: the loop keeps only a weak reference to a task. (A task of another,
            # closed loop never finishes; it must not block refreshes.)
            self._refreshing[host] = loop.create_task(self._refresh(host))
        return addr

    async def _refresh(self, host: str) -> None:
        try:
            addr = await self.lookup(host)
        except (OSError, ProbeFailed) as e:
            LOG.debug("looking up probe target %s again failed (%s); keeping %s", host, e,
                      self._addrs[host][0])
        else:
            self._addrs[host] = (addr, self._clock())
        finally:
            self._refreshing.pop(host, None)

    async def lookup(self, host: str) -> str:
        """Ask the system resolver (the seam tests replace)."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
        if not infos:
            raise ProbeFailed(f"{host}: no IPv4 address")
        return str(infos[0][4][0])
