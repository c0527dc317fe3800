"""The minimal supervisor: /health within 2 s, READY=1 on NOTIFY_SOCKET, exit 0 on SIGTERM."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import EXAMPLES, free_port


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_run_health_ready_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(5)
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000", "PATH": "/usr/bin:/bin"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "failberry", "run", "-c", str(EXAMPLES / "minimal.toml"),
         "--port", str(port), "--listen", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = None
        while time.monotonic() - started < 2.0:
            try:
                status, body = _get(port, "/health")
                break
            except OSError:
                time.sleep(0.02)
        assert status == 200, "no /health answer within 2 s of start"
        assert body["status"] == "ok"
        messages = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any("WATCHDOG=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        assert any("READY=1" in m for m in messages), messages
        assert any("WATCHDOG=1" in m for m in messages), messages
        code, snap = _get(port, "/status")
        assert code == 200 and snap["state"] == "running"
        code, _ = _get(port, "/nope")
        assert code == 404
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = proc.wait(timeout=5)
        assert time.monotonic() - t0 < 2.0
        assert rc == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[modem]\napn = ''\n")
    proc = subprocess.run([sys.executable, "-m", "failberry", "run", "-c", str(bad)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "modem.apn" in proc.stderr
