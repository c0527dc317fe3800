"""Benchmark of the health endpoint: wrk against /health on loopback (2 threads, 50
connections, 10 s), beside Python's http.server serving the same body in the same run (the
median of 3 alternating runs each, as the machine may be shared); then the supervisor's idle
RSS and CPU over 60 s.

    .venv/bin/python bench/health.py [--duration 10] [--idle 60]

The supervisor is the real one (`failberry.supervisor.Supervisor`) with a stand-in network
part that reports a healthy mobile uplink every 0.5 s, so /health goes through the same
decision as on the Pi. Targets (issue 7): >= 10,000 req/s, p99 < 5 ms, idle RSS <= 35 MB,
idle CPU <= 1%."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import http.server
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIG = '[modem]\napn = "internet"\n[health]\nlisten = "127.0.0.1"\n'
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


class _Network:
    """Reports a healthy mobile uplink every half second, like the real network part."""

    name = "network"
    deadline = 5.0

    def __init__(self, status: object) -> None:
        self.status = status

    async def run(self) -> None:
        from failberry.status import NetworkReport, Status, UplinkReport, report_network

        assert isinstance(self.status, Status)
        while True:
            report_network(self.status, "ok", NetworkReport(
                active_uplink="mobile",
                uplinks={"mobile": UplinkReport(up=True, reason="3/3 answer", interface="ppp0",
                                                latency_ms=45.0, loss_pct=0.0)}))
            await asyncio.sleep(0.5)


def serve_failberry(port: int) -> None:
    """The supervisor with the stand-in part, on 127.0.0.1:port."""
    from failberry import config, logsetup
    from failberry.supervisor import Supervisor, raise_nofile

    logsetup.setup()
    raise_nofile()
    sup = Supervisor(config.parse(CONFIG), port=port, host="127.0.0.1",
                     parts=lambda _c, status, _b: [_Network(status)])
    asyncio.run(sup.run())


def serve_reference(port: int, body: bytes) -> None:
    """Python's http.server (threading, HTTP/1.1 keep-alive) answering `body` on any GET."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            get(port)
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"bench: server {args} did not start")


def get(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().read()
    finally:
        conn.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(port: int, threads: int, connections: int, duration: int) -> dict[str, float]:
    """Run wrk; requests/s, latency percentiles (ms), and errors."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
                          "--latency", f"http://127.0.0.1:{port}/health"],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    res: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else float("nan")
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        res[f"p{pct}"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    res["errors"] = errors
    return res


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle(port: int, seconds: float) -> tuple[float, float, float]:
    """A fresh supervisor left alone: (RSS MiB at the end, peak RSS MiB, CPU % over `seconds`)."""
    proc = start(["--serve-failberry", str(port)], port)
    try:
        time.sleep(2)  # past start-up
        cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu = 100 * (proc_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        return proc_rss_mib(proc.pid), proc_rss_mib(proc.pid, "VmHWM"), cpu
    finally:
        stop(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="wrk seconds per server")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3, help="wrk runs per server (median shown)")
    p.add_argument("--idle", type=float, default=60.0, help="idle measurement seconds")
    p.add_argument("--serve-failberry", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--serve-reference", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--body", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_failberry:
        serve_failberry(a.serve_failberry)
        return 0
    if a.serve_reference:
        serve_reference(a.serve_reference, a.body.encode() + b"\n")
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")

    port = free_port()
    ours = start(["--serve-failberry", str(port)], port)
    ref_port = free_port()
    body = get(port)
    ref = start(["--serve-reference", str(ref_port), "--body", body.decode().strip()], ref_port)
    mine_runs: list[dict[str, float]] = []
    ref_runs: list[dict[str, float]] = []
    try:
        assert get(ref_port) == body, "the reference must serve the same body"
        # Alternate the two, so drifting load on a shared machine hits both alike.
        for _ in range(a.repeat):
            mine_runs.append(wrk(port, a.threads, a.connections, a.duration))
            ref_runs.append(wrk(ref_port, a.threads, a.connections, a.duration))
    finally:
        stop(ours)
        stop(ref)
    mine = {k: statistics.median(r[k] for r in mine_runs) for k in mine_runs[0]}
    theirs = {k: statistics.median(r[k] for r in ref_runs) for k in ref_runs[0]}
    rss, peak, cpu = idle(free_port(), a.idle)

    print(f"GET /health on loopback: wrk -t{a.threads} -c{a.connections} -d{a.duration}s, "
          f"median of {a.repeat} alternating runs; body {body!r}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'measure':<26}{'failberry':>12}{'http.server':>13}{'ratio':>8}  target    "
          "failberry runs")
    rows = [("requests/s", "rps", "{:,.0f}", ">= 10,000"), ("p50 latency ms", "p50", "{:.2f}", ""),
            ("p90 latency ms", "p90", "{:.2f}", ""), ("p99 latency ms", "p99", "{:.2f}", "< 5"),
            ("errors", "errors", "{:.0f}", "0")]
    for label, key, fmt, target in rows:
        ratio = mine[key] / theirs[key] if theirs[key] else float("nan")
        runs = " ".join(fmt.format(r[key]) for r in mine_runs)
        print(f"{label:<26}{fmt.format(mine[key]):>12}{fmt.format(theirs[key]):>13}"
              f"{ratio:>8.2f}  {target:<10}{runs}")
    print(f"{'idle RSS MiB (end)':<26}{rss:>12.1f}{'':>13}{'':>8}  <= 35")
    print(f"{'idle RSS MiB (peak)':<26}{peak:>12.1f}")
    print(f"{f'idle CPU % over {a.idle:g}s':<26}{cpu:>12.2f}{'':>13}{'':>8}  <= 1")
    print("(http.server sends headers and body in separate writes: Nagle's algorithm and the "
          "peer's delayed ACK hold each answer about 40 ms)")
    ok = (mine["rps"] >= 10_000 and mine["p99"] < 5 and rss <= 35 and cpu <= 1
          and mine["errors"] == 0)
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
