"""The real supervisor on a loopback port, with fake modem and network parts standing in at
the seams, driven through a control file: each route's codes and bodies as the state changes.

Run as a program (`python tests/test_health.py CONFIG PORT CONTROL`) this file is that
supervisor; the hostile-client, status and metrics tests start it the same way."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PROBE_ROUND = 0.2  # the fake network part's probe interval

MINIMAL = """
[modem]
apn = "internet"
[lan]
address = "{lan}"
[failover]
mode = "{mode}"
[uplink.wired]
interface = "{wired}"
[health]
lan_only_status = {lan_only}
"""


def write_config(path: Path, mode: str = "sidecar", lan: str = "192.168.1.2/24",
                 lan_only: bool = True) -> Path:
    """A valid config for the fake supervisor."""
    path.write_text(MINIMAL.format(mode=mode, lan=lan, lan_only=str(lan_only).lower(),
                                   wired="eth1" if mode == "gateway" else ""))
    return path


# ---------------------------------------------------------------------------------------------
# The fake parts (they run inside the supervisor process)


def _control(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class FakeNetwork:
    """Stands in for the network part: each probe round, reports the uplinks the control
    file describes, through the typed contract in failberry.status."""

    name = "network"
    deadline = 1.0

    def __init__(self, status: Any, control: Path) -> None:
        self.status = status
        self.control = control
        self.events: list[Any] = []
        self.active: str | None = None

    async def run(self) -> None:
        from failberry.status import (
            DataUsage,
            FailoverEvent,
            NetworkReport,
            UplinkReport,
            report_network,
        )

        while True:
            c = _control(self.control)
            if c.get("network_hang"):
                # A blocking call that never returns (a wedged netlink socket, say).
                await asyncio.to_thread(time.sleep, 3600)
            if not c.get("network_stall"):
                ups = {name: UplinkReport(up=bool(u.get("up")), reason=str(u.get("reason", "")),
                                          interface=str(u.get("interface", name)),
                                          latency_ms=u.get("latency_ms"),
                                          loss_pct=u.get("loss_pct"))
                       for name, u in c.get("uplinks", {}).items()}
                good = sorted((n for n, u in ups.items() if u.up),
                              key=lambda n: n != "wired")
                active = good[0] if good else None
                if active != self.active:
                    self.events.append(FailoverEvent(time.time(), active, self.active,
                                                     "fake policy"))
                    self.active = active
                report_network(self.status, "running", NetworkReport(
                    active_uplink=active, uplinks=ups, events=tuple(self.events),
                    failovers_total=len(self.events),
                    data=DataUsage(used_bytes=int(c.get("used", 0)),
                                   cap_bytes=int(c.get("cap", 0)),
                                   devices=c.get("devices", {}))))
            await asyncio.sleep(PROBE_ROUND)


class FakeModem:
    """Stands in for the modem part; cleans up (writes a marker) when cancelled."""

    name = "modem"
    deadline = 5.0

    def __init__(self, status: Any, control: Path) -> None:
        self.status = status
        self.control = control

    async def run(self) -> None:
        from failberry.status import ModemReport, report_modem

        try:
            while True:
                c = _control(self.control).get("modem", {})
                report_modem(self.status, str(c.get("state", "connected")),
                             ModemReport(signal_dbm=c.get("signal_dbm", -71), operator="TestNet",
                                         access_tech="LTE", interface="ppp0",
                                         address="10.64.0.7"))
                await asyncio.sleep(0.5)
        finally:
            # Cleanup that takes a while, in a thread, as a real part's would.
            await asyncio.to_thread(time.sleep, 0.3)
            (self.control.parent / "modem-cleaned").write_text("yes")


def serve(argv: Sequence[str]) -> int:
    """The fake supervisor: `CONFIG PORT CONTROL [MAX_CONNECTIONS [HOST]]`."""
    from failberry import config, logsetup
    from failberry.sdnotify import watchdog_interval
    from failberry.supervisor import Supervisor, raise_nofile
    from failberry.web.httpserver import Limits

    cfg_path, port, control = Path(argv[0]), int(argv[1]), Path(argv[2])
    limits = Limits(max_connections=int(argv[3])) if len(argv) > 3 else Limits()
    logsetup.setup()
    raise_nofile()
    cfg = config.load(cfg_path)
    host = argv[4] if len(argv) > 4 else "127.0.0.1"
    sup = Supervisor(cfg, port=port, host=host, config_path=cfg_path,
                     parts=lambda _c, status, _b: [FakeNetwork(status, control),
                                                   FakeModem(status, control)],
                     watchdog_period=watchdog_interval(), limits=limits)
    asyncio.run(sup.run())
    return 0


# ---------------------------------------------------------------------------------------------
# Test helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Running:
    """A fake supervisor process and how to steer it."""

    proc: subprocess.Popen[str]
    port: int
    control: Path

    def set(self, **state: Any) -> None:
        current = _control(self.control)
        current.update(state)
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(current))
        tmp.replace(self.control)  # atomic: the part never reads half a file

    def uplinks(self, **up: bool) -> None:
        self.set(uplinks={name: {"up": v, "reason": "3/3 answer" if v else "3/3 lost",
                                 "latency_ms": 40.0, "loss_pct": 0.0 if v else 100.0}
                          for name, v in up.items()})

    def get(self, path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
        return request(self.port, path, method)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def request(port: int, path: str, method: str = "GET",
            timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    """One request on a fresh connection: (status, body, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


@contextlib.contextmanager
def supervisor(tmp_path: Path, mode: str = "sidecar", env: dict[str, str] | None = None,
               max_connections: int | None = None, lan_only: bool = True,
               **state: Any) -> Iterator[Running]:
    """Start the fake supervisor; wait for /health to answer; stop it afterwards."""
    cfg = write_config(tmp_path / "failberry.toml", mode, lan_only=lan_only)
    control = tmp_path / "control.json"
    port = free_port()
    argv = [sys.executable, str(HERE / "test_health.py"), str(cfg), str(port), str(control)]
    if max_connections is not None:
        argv.append(str(max_connections))
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    run = Running(subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True), port, control)
    run.set(**state)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                run.get("/health")
                break
            except OSError:
                if time.monotonic() > deadline or run.proc.poll() is not None:
                    raise AssertionError("fake supervisor did not start: " + (
                        run.proc.stderr.read() if run.proc.poll() is not None and
                        run.proc.stderr else "")) from None
                time.sleep(0.02)
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(5)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()


def wait_for(run: Running, path: str, code: int, within: float) -> float:
    """Poll `path` until it answers `code`; seconds it took (fails after `within`)."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < within:
        last = run.get(path)[0]
        if last == code:
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError(f"{path} still {last}, not {code}, after {within}s")


def body(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.timeout(60)
def test_sidecar_health_follows_the_mobile_uplink(tmp_path: Path) -> None:
    with supervisor(tmp_path) as run:
        run.uplinks(mobile=True)
        wait_for(run, "/health", 200, 3)
        code, raw, headers = run.get("/health")
        assert body(raw) == {"status": "ok", "reason": "mobile up"}
        assert headers["content-type"] == "application/json"
        assert b'"ok"' in raw[:5120]

        run.uplinks(mobile=False)
        # One probe round to notice, plus the time to poll: well inside two rounds.
        took = wait_for(run, "/health", 503, 5)
        assert took < 2 * PROBE_ROUND + 1.0
        code, raw, _ = run.get("/health")
        assert body(raw) == {"status": "fail", "reason": "mobile down: 3/3 lost"}
        assert b'"fail"' in raw

        run.uplinks(mobile=True)
        wait_for(run, "/health", 200, 5)

        # The wired uplink is not part of the sidecar decision.
        run.uplinks(mobile=True, wired=False)
        time.sleep(3 * PROBE_ROUND)
        assert run.get("/health")[0] == 200
        code, raw, _ = run.get("/health/wired")
        assert code == 503 and body(raw)["status"] == "fail" and body(raw)["uplink"] == "wired"
        code, raw, _ = run.get("/health/mobile")
        assert code == 200 and body(raw) == {"status": "ok", "uplink": "mobile",
                                             "reason": "mobile up"}
        assert run.get("/health/nosuch")[0] == 404


@pytest.mark.timeout(60)
def test_gateway_health_needs_any_uplink(tmp_path: Path) -> None:
    with supervisor(tmp_path, mode="gateway") as run:
        run.uplinks(wired=True, mobile=False)
        wait_for(run, "/health", 200, 3)
        assert body(run.get("/health")[1])["reason"] == "wired up"
        run.uplinks(wired=False, mobile=True)
        time.sleep(2 * PROBE_ROUND)
        assert run.get("/health")[0] == 200
        run.uplinks(wired=False, mobile=False)
        wait_for(run, "/health", 503, 2 * PROBE_ROUND + 1.0)
        assert body(run.get("/health")[1]) == {"status": "fail",
                                               "reason": "no uplink passes its probes"}
        run.uplinks(wired=True, mobile=True)
        wait_for(run, "/health", 200, 2 * PROBE_ROUND + 1.0)
        assert body(run.get("/health")[1])["reason"] == "mobile, wired up"


@pytest.mark.timeout(60)
def test_silent_network_part_fails_health(tmp_path: Path) -> None:
    with supervisor(tmp_path) as run:
        run.uplinks(mobile=True)
        wait_for(run, "/health", 200, 3)
        run.set(network_stall=True)
        wait_for(run, "/health", 503, 3)  # the fake's deadline is 1 s
        assert body(run.get("/health")[1])["reason"] == "network checks not reporting"
        assert run.get("/health/mobile")[0] == 503
        run.set(network_stall=False)
        wait_for(run, "/health", 200, 3)


@pytest.mark.timeout(60)
def test_status_document_and_metrics(tmp_path: Path) -> None:
    with supervisor(tmp_path, used=3 * 2**30, cap=10 * 2**30,
                    devices={"aa:bb:cc:dd:ee:01": 2**30}) as run:
        run.uplinks(mobile=True, wired=False)
        wait_for(run, "/health", 200, 3)
        run.uplinks(mobile=False, wired=False)
        wait_for(run, "/health", 503, 3)
        code, raw, headers = run.get("/status")
        assert code == 200 and headers["content-type"] == "application/json"
        doc = body(raw)
        assert doc["status"] == "fail" and doc["mode"] == "sidecar" and doc["state"] == "running"
        assert doc["active_uplink"] is None
        assert doc["uplinks"]["mobile"]["up"] is False
        assert doc["uplinks"]["mobile"]["health"] == "fail"
        assert doc["modem"]["state"] == "connected" and doc["modem"]["signal_dbm"] == -71
        assert doc["data"]["used_bytes"] == 3 * 2**30 and doc["data"]["cap_bytes"] == 10 * 2**30
        assert [(e["previous"], e["uplink"]) for e in doc["events"]] == [
            (None, "mobile"), ("mobile", None)]
        assert doc["failovers_total"] == 2
        assert doc["versions"]["failberry"] and doc["versions"]["python"]
        assert doc["uptime_s"] > 0
        assert set(doc["parts"]) == {"loop", "modem", "network"}

        code, raw, headers = run.get("/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        text = raw.decode()
        assert 'failberry_uplink_up{uplink="mobile"} 0' in text
        assert "failberry_healthy 0" in text
        assert "failberry_failovers_total 2" in text
        assert "failberry_modem_signal_dbm -71" in text
        check = subprocess.run(["promtool", "check", "metrics"], input=raw,
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.timeout(60)
def test_methods_head_and_errors(tmp_path: Path) -> None:
    with supervisor(tmp_path) as run:
        run.uplinks(mobile=True)
        wait_for(run, "/health", 200, 3)
        code, raw, headers = run.get("/health", "HEAD")
        assert code == 200 and raw == b""
        assert int(headers["content-length"]) == len(run.get("/health")[1])
        code, raw, headers = run.get("/health", "POST")
        assert code == 405 and headers["allow"] == "GET, HEAD" and body(raw)["status"] == "fail"
        assert run.get("/health", "DELETE")[0] == 405
        assert run.get("/nope")[0] == 404
        assert run.get("/health?from=route53")[0] == 200
        assert run.get("/")[0] == 404


def _raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.timeout(60)
def test_keep_alive_pipelining_and_limits(tmp_path: Path) -> None:
    with supervisor(tmp_path) as run:
        run.uplinks(mobile=True)
        wait_for(run, "/health", 200, 3)
        # Three pipelined requests on one connection, the last asking to close.
        out = _raw_exchange(run.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2 +
                            b"GET /health/mobile HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert out.count(b"HTTP/1.1 200 OK") == 3 and out.endswith(b"}\n")
        # HTTP/1.0 closes unless asked to keep alive.
        assert _raw_exchange(run.port, b"GET /health HTTP/1.0\r\n\r\n").startswith(
            b"HTTP/1.1 200 OK")
        assert _raw_exchange(run.port, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 414 ")
        assert _raw_exchange(run.port, b"GET /health HTTP/1.1\r\nX: " + b"a" * 9000).startswith(
            b"HTTP/1.1 431 ")
        assert _raw_exchange(run.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
                             ).startswith(b"HTTP/1.1 400 ")
        assert _raw_exchange(run.port, b"GET /health HTTP/2.0\r\n\r\n").startswith(
            b"HTTP/1.1 505 ")
        assert _raw_exchange(run.port, b"GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n"
                             ).startswith(b"HTTP/1.1 400 ")
        assert _raw_exchange(run.port, b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
                             b"hello").startswith(b"HTTP/1.1 400 ")


@pytest.mark.timeout(60)
def test_status_and_metrics_lan_only_decision(tmp_path: Path) -> None:
    """The LAN restriction on the real app object, from addresses loopback cannot give us
    (the root test below checks it with real packets)."""
    from failberry import config
    from failberry.status import Status
    from failberry.web.health import HealthApp
    from failberry.web.httpserver import HttpStats

    cfg = config.load(write_config(tmp_path / "f.toml", lan="192.168.7.2/24"))
    st = Status(state="running")
    app = HealthApp(st, cfg, HttpStats())
    for peer, code in (("192.168.7.50", 200), ("127.0.0.1", 200), ("::1", 200),
                       ("::ffff:192.168.7.9", 200), ("203.0.113.9", 403),
                       ("192.168.8.1", 403), ("2001:db8::1", 403)):
        assert app("GET", "/status", peer).code == code, peer
        assert app("GET", "/metrics", peer).code == code, peer
        assert app("GET", "/health", peer).code == 200, peer
    open_cfg = config.load(write_config(tmp_path / "g.toml", lan="192.168.7.2/24",
                                        lan_only=False))
    app.configure(open_cfg)
    assert app("GET", "/status", "203.0.113.9").code == 200


def _serve_in(ns: str, tmp_path: Path, lan: str, host: str) -> tuple[subprocess.Popen[bytes], int]:
    """The fake supervisor in namespace `ns`, its mobile uplink up, listening on host; and
    its port."""
    cfg = write_config(tmp_path / "f.toml", lan=lan)
    (tmp_path / "control.json").write_text(json.dumps({"uplinks": {"mobile": {"up": True}}}))
    port = free_port()
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                             str(HERE / "test_health.py"), str(cfg), str(port),
                             str(tmp_path / "control.json"), "1024", host],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, port


@pytest.mark.root
@pytest.mark.timeout(120)
def test_lan_only_with_real_packets(tmp_path: Path) -> None:
    """In a namespace of its own: a peer on the LAN prefix reads /status; one outside gets 403
    for /status and /metrics but 200 for /health."""
    ns = f"fb-health-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def nsrun(*cmd: str) -> None:
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)

        nsrun("ip", "link", "set", "lo", "up")
        nsrun("ip", "link", "add", "fbl0", "type", "veth", "peer", "name", "fbl1")
        nsrun("ip", "addr", "add", "10.91.0.1/24", "dev", "fbl0")
        nsrun("ip", "addr", "add", "10.92.0.1/24", "dev", "fbl1")
        nsrun("ip", "link", "set", "fbl0", "up")
        nsrun("ip", "link", "set", "fbl1", "up")
        proc, port = _serve_in(ns, tmp_path, "10.91.0.2/24", "0.0.0.0")
        script = ("import http.client,sys,time\n"
                  "for i in range(200):\n"
                  "  try:\n"
                  "    c=http.client.HTTPConnection('10.91.0.1',int(sys.argv[2]),timeout=3,"
                  "source_address=(sys.argv[1],0))\n"
                  "    out=[]\n"
                  "    for p in ('/health','/status','/metrics'):\n"
                  "      c.request('GET',p); r=c.getresponse(); r.read(); out.append(r.status)\n"
                  "    if out[0] != 200: raise OSError('not up yet')\n"
                  "    print(out); break\n"
                  "  except OSError: time.sleep(0.05)\n")
        try:
            def codes(source: str) -> str:
                return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script,
                                       source, str(port)], capture_output=True, text=True,
                                      timeout=30).stdout.strip()

            assert codes("10.91.0.1") == "[200, 200, 200]"
            assert codes("10.92.0.1") == "[200, 403, 403]"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.root
@pytest.mark.timeout(60)
def test_listens_on_a_lan_address_that_is_configured_only_later(tmp_path: Path) -> None:
    """At boot failberryd starts beside systemd-networkd: `[health] listen` may name the LAN
    address before networkd has given it (IP_FREEBIND); it answers once it exists."""
    ns = f"fb-health-{os.getpid()}-late"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def nsrun(*cmd: str) -> None:
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, timeout=10)

        nsrun("ip", "link", "set", "lo", "up")
        proc, port = _serve_in(ns, tmp_path, "10.93.0.1/24", "10.93.0.1")
        get = ("import http.client,sys\n"
               "c=http.client.HTTPConnection('10.93.0.1',int(sys.argv[1]),timeout=3)\n"
               "c.request('GET','/health'); print(c.getresponse().status)\n")
        try:
            deadline = time.monotonic() + 20
            while "health endpoint listening" not in (line := proc.stderr.readline().decode()):
                assert line and time.monotonic() < deadline, "the server did not start"
            nsrun("ip", "addr", "add", "10.93.0.1/24", "dev", "lo")
            res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", get,
                                  str(port)], capture_output=True, text=True, timeout=30)
            assert res.stdout.strip() == "200", res.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
