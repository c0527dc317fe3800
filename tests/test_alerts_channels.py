"""Webhooks against a local HTTP server on loopback (its failures and the retry), and hook
scripts (their environment, a failing one, a hanging one killed with its children)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from failberry import config
from failberry.alerts.build import build
from failberry.alerts.channel import ChannelError
from failberry.alerts.hooks import HookChannel, scripts
from failberry.alerts.model import Alert, Event, Severity
from failberry.alerts.outbox import Policy
from failberry.alerts.spec import parse_webhook
from failberry.alerts.webhook import WebhookChannel
from failberry.bus import ActiveUplinkChanged, Bus
from failberry.parts import Seams
from failberry.status import Status

ALERT = Alert(Event.FAILOVER, Severity.WARNING, "failover: wired -> mobile: carrier lost",
              1_700_000_000.0, "mobile", "wired", "carrier lost")


class Receiver:
    """An HTTP server on loopback that fails the first `fail` requests with 500."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                code = 500 if len(outer.requests) <= outer.fail else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail=2)
    r.start()
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_webhook_templates_reach_the_server(receiver: Receiver) -> None:
    receiver.fail = 0
    base = f"http://127.0.0.1:{receiver.port}"

    async def scenario() -> None:
        for spec in (f"ntfy {base}/failberry-alerts", f"slack {base}/services/T/B/X",
                     f"json {base}/hook"):
            ch = WebhookChannel("w", parse_webhook(spec), Policy(), timeout=5, host="pi")
            await ch.send(ALERT, ALERT.message)

    asyncio.run(scenario())
    (p1, ntfy), (p2, slack), (p3, generic) = receiver.requests
    assert p1 == "/" and ntfy["topic"] == "failberry-alerts" and ntfy["priority"] == 4
    assert ntfy["message"] == ALERT.message and "failover" in ntfy["tags"]
    assert p2 == "/services/T/B/X" and slack == {"text": f"*failberry pi: failover*\n"
                                                         f"{ALERT.message}"}
    assert p3 == "/hook" and generic["event"] == "failover" and generic["uplink"] == "mobile"
    assert generic["severity"] == "warning" and generic["previous"] == "wired"


def test_webhook_server_failing_then_retried(receiver: Receiver, tmp_path: Path) -> None:
    """The server answers 500 twice; the part retries with backoff until it takes it."""
    cfg = config.parse(f'[modem]\napn = "x"\n[paths]\nstate_dir = "{tmp_path}"\n[alerts]\n'
                       f'webhooks = ["json http://127.0.0.1:{receiver.port}/hook"]\n'
                       f'hooks_dir = "{tmp_path}/none"\nretry_initial = "200ms"\n')
    status, bus = Status(), Bus()

    async def scenario() -> float:
        part = build(cfg, Seams(status, bus), tick=0.05)
        task = asyncio.create_task(part.run())
        try:
            bus.publish(ActiveUplinkChanged("wired", None, "start"))
            bus.publish(ActiveUplinkChanged("mobile", "wired", "carrier lost"))
            start = time.monotonic()
            while len(receiver.requests) < 3:
                assert time.monotonic() - start < 5, receiver.requests
                await asyncio.sleep(0.02)
            took = time.monotonic() - start
            await asyncio.sleep(0.3)
            return took
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    took = asyncio.run(scenario())
    assert len(receiver.requests) == 3  # 500, 500, 200: then no more
    assert all(b["message"] == "failover: wired -> mobile: carrier lost"
               for _, b in receiver.requests)
    assert took >= 0.2 + 0.4 - 0.05  # backoff 200 ms, then 400 ms
    ch = status.parts["alerts"].detail["channels"]["webhook:127.0.0.1"]
    assert ch["sent"] == 1 and ch["failed"] == 2 and ch["queued"] == 0


def test_webhook_without_a_server_is_a_channel_error() -> None:
    ch = WebhookChannel("w", parse_webhook(f"json http://127.0.0.1:{free_port()}/x/secret"),
                        Policy(), timeout=2)
    with pytest.raises(ChannelError) as info:
        asyncio.run(ch.send(ALERT, "x"))
    assert "127.0.0.1" in str(info.value) and "secret" not in str(info.value)


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_hook_scripts_get_the_event_in_their_environment(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "env.txt"
    write_script(hooks / "10-env", f"env | grep ^FAILBERRY_ | sort > {out}\n")
    (hooks / "20-not-executable").write_text("#!/bin/sh\ntouch /tmp/never\n")
    write_script(hooks / "30-old~", "exit 1\n")
    assert [p.name for p in scripts(hooks)] == ["10-env"]
    alert = Alert(Event.DATA_CAP, Severity.CRITICAL, "mobile data at 100%", 1_700_000_000.0,
                  "mobile", fields={"used_bytes": "123", "cap_bytes": "100"})
    ch = HookChannel(hooks, 5.0, Policy(retries=False))
    asyncio.run(ch.send(alert, "mobile data at 100% (2 more since 10:00)"))
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env == {"FAILBERRY_EVENT": "data_cap", "FAILBERRY_SEVERITY": "critical",
                   "FAILBERRY_MESSAGE": "mobile data at 100% (2 more since 10:00)",
                   "FAILBERRY_UPLINK": "mobile", "FAILBERRY_PREVIOUS_UPLINK": "",
                   "FAILBERRY_REASON": "", "FAILBERRY_TIME": "1700000000",
                   "FAILBERRY_USED_BYTES": "123", "FAILBERRY_CAP_BYTES": "100"}


def test_a_failing_hook_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    write_script(hooks / "10-fail", "echo broken >&2; exit 3\n")
    write_script(hooks / "20-ok", f"touch {tmp_path}/ran\n")
    with pytest.raises(ChannelError) as info:
        asyncio.run(HookChannel(hooks, 5.0, Policy()).send(ALERT, "x"))
    assert "10-fail exited 3" in str(info.value)
    assert (tmp_path / "ran").exists()


def test_a_hanging_hook_is_killed_with_its_children_at_the_timeout(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    pids = tmp_path / "pids"
    # The script starts a child that ignores SIGTERM, then hangs itself.
    write_script(hooks / "10-hang", f"(trap '' TERM; sleep 300) &\necho $! > {pids}\n"
                                    "echo $$ >> " + str(pids) + "\nsleep 300\n")
    start = time.monotonic()
    with pytest.raises(ChannelError) as info:
        asyncio.run(HookChannel(hooks, 0.5, Policy()).send(ALERT, "x"))
    took = time.monotonic() - start
    assert "10-hang timed out" in str(info.value)
    assert 0.5 <= took < 0.5 + 2.0 + 1.0  # timeout, SIGTERM grace, then SIGKILL
    for pid in map(int, pids.read_text().split()):
        assert gone(pid), f"process {pid} of the hook survived"


def gone(pid: int, wait: float = 2.0) -> bool:
    """The process exited (a zombie left for init to reap counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False
