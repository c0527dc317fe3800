"""Hostile clients against the real supervisor: slowloris, a 1 MB header, garbage bytes, and
clients that never read. During each, memory stays bounded and /health from a normal client
still answers quickly (the issue's bound is 100 ms; asserted on the median, with every sample
well inside Route53's 2 s)."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failberry.supervisor import raise_nofile
from test_health import Running, body, request, supervisor, wait_for

MEMORY_BOUND_KIB = 40 * 1024


def health_latency(run: Running) -> float:
    """One /health on a fresh connection, as a DNS checker does it; seconds."""
    t0 = time.perf_counter()
    code, raw, _ = request(run.port, "/health", timeout=5)
    took = time.perf_counter() - t0
    assert code == 200 and body(raw)["status"] == "ok"
    return took


def assert_responsive(samples: list[float]) -> None:
    assert samples, "no samples"
    assert statistics.median(samples) < 0.100, sorted(samples)
    assert max(samples) < 1.0, sorted(samples)


def connections(run: Running) -> int:
    n: int = body(request(run.port, "/status")[1])["http"]["connections"]
    return n


@contextlib.contextmanager
def started(tmp_path: Path, max_connections: int | None = None) -> Iterator[Running]:
    """The fake supervisor with a healthy mobile uplink, warmed up."""
    with supervisor(tmp_path, max_connections=max_connections) as run:
        run.uplinks(mobile=True)
        wait_for(run, "/health", 200, 5)
        for _ in range(20):  # warm up allocations before the memory baseline
            health_latency(run)
        yield run


@pytest.mark.timeout(120)
def test_slowloris_1000_connections(tmp_path: Path) -> None:
    raise_nofile(4096)
    with started(tmp_path) as run:
        socks: list[socket.socket] = []
        try:
            rss0 = run.rss_kib()
            for _ in range(1000):
                s = socket.create_connection(("127.0.0.1", run.port), timeout=5)
                s.sendall(b"G")
                socks.append(s)
            header = b"ET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100
            samples: list[float] = []
            peak = rss0
            held = 0
            t0 = time.monotonic()
            i = 0
            # One byte per connection every 2 s, for 8 s: inside the 10 s head timeout.
            while time.monotonic() - t0 < 8:
                for s in socks:
                    with contextlib.suppress(OSError):  # the server may have dropped it
                        s.send(header[i % len(header):i % len(header) + 1])
                i += 1
                for _ in range(8):
                    samples.append(health_latency(run))
                    time.sleep(0.25)
                peak = max(peak, run.rss_kib())
                held = max(held, connections(run))
            assert held >= 1000, held  # the server really held them all
            assert_responsive(samples)
            assert peak - rss0 < MEMORY_BOUND_KIB, (rss0, peak)
            # Past the head timeout the server drops them, with a 408 where it can.
            deadline = time.monotonic() + 10
            while connections(run) > 10 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert connections(run) <= 10
            socks[0].settimeout(2)
            assert socks[0].recv(4096).startswith(b"HTTP/1.1 408 ")
        finally:
            for s in socks:
                s.close()


@pytest.mark.timeout(120)
def test_connection_cap_evicts_slow_clients_not_new_ones(tmp_path: Path) -> None:
    raise_nofile(4096)
    with started(tmp_path, max_connections=100) as run:
        socks: list[socket.socket] = []
        try:
            samples = []
            for n in range(300):
                s = socket.create_connection(("127.0.0.1", run.port), timeout=5)
                s.sendall(b"GET /health HTTP/1.1\r\n")
                socks.append(s)
                if n % 20 == 0:
                    samples.append(health_latency(run))
            assert_responsive(samples)
            status = body(request(run.port, "/status")[1])["http"]
            assert status["connections"] <= 100
            assert status["evicted"] >= 200
        finally:
            for s in socks:
                s.close()


def _flood(port: int, payload: bytes, results: list[bytes]) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            # The server may answer and close before we finish sending: expected.
            with contextlib.suppress(OSError):
                s.sendall(payload)
            try:
                results.append(s.recv(4096))
            except OSError:
                results.append(b"reset")
    except OSError as e:
        results.append(repr(e).encode())


def _attack_while_sampling(run: Running, payloads: list[bytes]) -> tuple[list[bytes],
                                                                      list[float], int]:
    rss0 = run.rss_kib()
    results: list[bytes] = []
    threads = [threading.Thread(target=_flood, args=(run.port, p, results)) for p in payloads]
    for t in threads:
        t.start()
    samples = []
    peak = rss0
    while any(t.is_alive() for t in threads):
        samples.append(health_latency(run))
        peak = max(peak, run.rss_kib())
        time.sleep(0.02)
    for t in threads:
        t.join()
    for _ in range(10):
        samples.append(health_latency(run))
    return results, samples, peak - rss0


@pytest.mark.timeout(120)
def test_one_megabyte_headers(tmp_path: Path) -> None:
    with started(tmp_path) as run:
        big = b"GET /health HTTP/1.1\r\nX-Big: " + b"b" * (1024 * 1024) + b"\r\n\r\n"
        results, samples, grew = _attack_while_sampling(run, [big] * 40)
        assert len(results) == 40
        # Each is refused with 431 (or reset while still sending its megabyte).
        assert all(r.startswith(b"HTTP/1.1 431 ") or r in (b"reset", b"") for r in results), (
            results[:3])
        assert sum(r.startswith(b"HTTP/1.1 431 ") for r in results) >= 1
        assert_responsive(samples)
        assert grew < MEMORY_BOUND_KIB, grew


@pytest.mark.timeout(120)
def test_garbage_bytes(tmp_path: Path) -> None:
    with started(tmp_path) as run:
        payloads = [os.urandom(64 * 1024) for _ in range(100)]
        payloads += [os.urandom(200) + b"\r\n\r\n" for _ in range(100)]
        payloads += [b"\x00" * 5000 + b"\r\n\r\n", b"\r\n\r\n" * 1000, b"GET\r\n\r\n"]
        results, samples, grew = _attack_while_sampling(run, payloads)
        assert len(results) == len(payloads)
        # Every one is answered with an error and closed at once (never a 200, never a hang).
        for r in results:
            assert r.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 414 ", b"HTTP/1.1 431 ")) or r in (
                b"reset", b""), r[:80]
        assert_responsive(samples)
        assert grew < MEMORY_BOUND_KIB, grew


@pytest.mark.timeout(120)
def test_clients_that_never_read(tmp_path: Path) -> None:
    with started(tmp_path) as run:
        socks: list[socket.socket] = []
        try:
            rss0 = run.rss_kib()
            pipeline = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n" * 3000  # ~5 MB of answers each
            for _ in range(50):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(5)
                s.connect(("127.0.0.1", run.port))
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.send(pipeline)  # as much as the kernel takes; never read a byte
                socks.append(s)
            samples = []
            peak = rss0
            for _ in range(30):
                samples.append(health_latency(run))
                peak = max(peak, run.rss_kib())
                time.sleep(0.1)
            assert_responsive(samples)
            assert peak - rss0 < MEMORY_BOUND_KIB, (rss0, peak)
            assert connections(run) >= 50  # still there, paused, not answered into memory
            # They never drain, so their deadline passes and the server drops them.
            deadline = time.monotonic() + 15
            while connections(run) > 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert connections(run) <= 5
        finally:
            for s in socks:
                s.close()
