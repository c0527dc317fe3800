"""The minimal supervisor: /health within 2 s, READY=1 on NOTIFY_SOCKET, exit 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conftest import EXAMPLES, free_port
from failberry import config, logsetup
from failberry.bus import Bus
from failberry.config import Config
from failberry.parts import Part, Recipe, Seams
from failberry.status import Status
from failberry.supervisor import IoExecutor, Supervisor, Timing
from test_health import supervisor, wait_for


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
         "--no-network", "--port", str(port), "--listen", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status, seen = None, set()
        while time.monotonic() - started < 2.0:
            try:
                status, body = _get(port, "/health")
            except OSError:
                time.sleep(0.02)
                continue
            seen.add((status, body.get("reason")))
            if status == 200:
                break
            time.sleep(0.02)
        # While the parts' modules load, /health says so (503); OK once they run.
        assert seen <= {(503, "supervisor starting"), (200, "running")}, seen
        assert status == 200, f"no healthy /health answer within 2 s of start: {seen}"
        assert body["status"] == "ok"
        messages = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any("WATCHDOG=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        assert any("READY=1" in m for m in messages), messages
        assert any("WATCHDOG=1" in m for m in messages), messages
        # While it starts (listening, each of the parts' modules imported) it asks systemd for
        # more start time, so a slow board is not killed mid-start; all of that before READY.
        ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
        assert messages[0] == "EXTEND_TIMEOUT_USEC=90000000", messages
        assert sum(m == "EXTEND_TIMEOUT_USEC=90000000" for m in messages[:ready]) >= 3, messages
        assert not any("EXTEND_TIMEOUT_USEC" in m for m in messages[ready:]), messages
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


# ---------------------------------------------------------------------------------------------
# Wiring: the watchdog, crashing parts, SIGHUP reloads, SIGTERM with parts cleaning up.


def _notify_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.05)
    return s


def _drain(s: socket.socket, seconds: float) -> list[str]:
    """Every datagram that arrives within `seconds`."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(s.recv(4096).decode())
        except TimeoutError:
            continue
    return out


@pytest.mark.timeout(60)
def test_watchdog_pings_stop_while_a_part_is_silent(tmp_path: Path) -> None:
    notify = _notify_socket(tmp_path / "notify.sock")
    # WATCHDOG_USEC 200 ms: the supervisor pings every 100 ms while everything is current.
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    try:
        with supervisor(tmp_path, env=env) as run:
            run.uplinks(mobile=True)
            before = _drain(notify, 1.5)
            assert any("READY=1" in m for m in before), before
            assert sum("WATCHDOG=1" in m for m in before) >= 5, before
            assert any(m.startswith("STATUS=health ok (mobile up)") for m in before), before

            run.set(network_stall=True)  # the network part stops reporting (deadline 1 s)
            mid = _drain(notify, 1.5)  # its deadline passes in here
            silent = _drain(notify, 2.0)
            assert not any("WATCHDOG=1" in m for m in silent), silent
            assert any(m.startswith("STATUS=health fail (network checks not reporting)")
                       for m in mid + silent), mid + silent

            run.set(network_stall=False)
            after = _drain(notify, 1.5)
            assert sum("WATCHDOG=1" in m for m in after) >= 3, after
    finally:
        notify.close()


@pytest.mark.timeout(60)
def test_sigterm_stops_within_2s_while_parts_clean_up(tmp_path: Path) -> None:
    with supervisor(tmp_path) as run:
        run.uplinks(mobile=True)
        wait_for(run, "/health", 200, 3)
        run.set(network_hang=True)  # the network part now waits on a thread that never ends
        time.sleep(0.5)
        run.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = run.proc.wait(5)
        took = time.monotonic() - t0
        err = run.proc.stderr.read() if run.proc.stderr else ""
        assert rc == 0, err
        assert took < 2.0, took
        # The modem part's cleanup (0.3 s in a thread) ran to the end.
        assert (tmp_path / "modem-cleaned").read_text() == "yes"
        assert "supervisor stopped" in err


class _Flaky:
    """Crashes on its first `crashes` runs, then reports until cancelled."""

    def __init__(self, status: Status, crashes: int) -> None:
        self.name = "flaky"
        self.deadline = 5.0
        self.status = status
        self.crashes = crashes
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise OSError(f"flaky failure {self.runs}")
        while True:
            self.status.report(self.name, "running", runs=self.runs)
            await asyncio.sleep(0.02)


def _cfg_file(path: Path, mode: str = "sidecar") -> Path:
    wired = 'interface = "eth1"' if mode == "gateway" else ""
    path.write_text(f'[modem]\napn = "internet"\n[failover]\nmode = "{mode}"\n'
                    f"[uplink.wired]\n{wired}\n")
    return path


async def _until(cond: Callable[[], bool], within: float) -> None:
    end = time.monotonic() + within
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.timeout(30)
def test_a_crashing_part_is_restarted_with_backoff(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg = config.load(_cfg_file(tmp_path / "f.toml"))
    made: list[_Flaky] = []

    def parts(_cfg: Config, status: Status, _bus: Bus) -> list[Part]:
        made.append(_Flaky(status, crashes=3))
        return [made[-1]]

    async def scenario() -> None:
        sup = Supervisor(cfg, port=0, host="127.0.0.1", parts=parts,
                         timing=Timing(restart_initial=0.05, restart_max=0.2))
        task = asyncio.create_task(sup.run())
        await _until(lambda: sup.status.parts.get("flaky") is not None
                     and sup.status.parts["flaky"].state == "running", 5)
        assert made[0].runs == 4 and sup.restarts["flaky"] == 3
        reader, writer = await asyncio.open_connection("127.0.0.1", sup.http.port)
        writer.write(b"GET /status HTTP/1.1\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200 ") and b'"restarts":{"flaky":3}' in reply
        sup.request_stop("test")
        await task

    with caplog.at_level(logging.INFO, logger="failberry.supervisor"):
        asyncio.run(scenario())
    crashed = [(r.levelno, r.getMessage()) for r in caplog.records
               if "crashed" in r.getMessage()]
    assert crashed == [(logging.ERROR, f"part flaky crashed: OSError: flaky failure {i}; "
                        f"restarting it in {wait}s (restart {i})")
                       for i, wait in ((1, 0.05), (2, 0.1), (3, 0.2))]
    # The first crash's traceback is at ERROR (for a bug report); the repeats only at DEBUG.
    tracebacks = [r for r in caplog.records if r.getMessage() == "part flaky traceback"]
    assert [r.levelno for r in tracebacks] == [logging.ERROR]
    first = tracebacks[0].exc_info
    assert first is not None and "flaky failure 1" in str(first[1])


class _Fresh:
    """A part that crashes while `crashes` says so; its recipe builds each object (failing
    while `build_failures` says so), as the network part's does."""

    name = "fresh"
    deadline = 5.0

    def __init__(self, status: Status, made: list[_Fresh], crashes: list[bool]) -> None:
        self.status = status
        self.made = made
        self.crashes = crashes
        self.runs = 0
        made.append(self)

    def handover(self) -> int:
        return len(self.made)

    async def run(self) -> None:
        self.runs += 1
        if self.crashes and self.crashes.pop(0):
            raise RuntimeError(f"object {len(self.made)} crashed")
        while True:
            self.status.report(self.name, "running", objects=len(self.made))
            await asyncio.sleep(0.02)


@pytest.mark.timeout(30)
def test_a_crashed_part_is_rebuilt_fresh(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    cfg = config.load(_cfg_file(tmp_path / "f.toml"))
    made: list[_Fresh] = []

    crashes, build_failures = [True, True], [False, False, True, False]
    kept: list[object] = []

    def build(seams: Seams) -> _Fresh:
        kept.append(seams.kept)
        if build_failures.pop(0):
            raise OSError("no netlink socket")
        return _Fresh(seams.status, made, crashes)

    def parts(_cfg: Config, _status: Status, _bus: Bus) -> list[Recipe]:
        return [Recipe("fresh", build)]

    async def scenario() -> None:
        sup = Supervisor(cfg, port=0, host="127.0.0.1", parts=parts,
                         timing=Timing(restart_initial=0.02, restart_max=0.1))
        task = asyncio.create_task(sup.run())
        await _until(lambda: sup.status.parts.get("fresh") is not None
                     and sup.status.parts["fresh"].state == "running", 5)
        await asyncio.sleep(0.1)
        # Two crashes, one failed build: three objects, each run exactly once.
        assert [m.runs for m in made] == [1, 1, 1]
        assert sup.restarts["fresh"] == 3
        assert kept == [None, 1, 2, 2]  # the failed build's handover goes to the next one
        sup.request_stop("test")
        await task

    with caplog.at_level(logging.INFO, logger="failberry.supervisor"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("part fresh")
             and r.getMessage() != "part fresh traceback"]
    assert lines == ["part fresh crashed: RuntimeError: object 1 crashed; restarting it in "
                     "0.02s (restart 1)",
                     "part fresh crashed: RuntimeError: object 2 crashed; restarting it in "
                     "0.04s (restart 2)",
                     "part fresh could not be rebuilt: OSError: no netlink socket; restarting it "
                     "in 0.08s (restart 3)"]


@pytest.mark.timeout(30)
def test_sighup_reload_refuses_a_bad_config_and_applies_a_good_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _cfg_file(tmp_path / "f.toml")
    cfg = config.load(path)
    builds: list[str] = []

    def parts(c: Config, status: Status, _bus: Bus) -> list[Part]:
        builds.append(c.failover.mode.value)
        return [_Flaky(status, crashes=0)]

    async def scenario() -> None:
        sup = Supervisor(cfg, port=0, host="127.0.0.1", parts=parts, config_path=path)
        task = asyncio.create_task(sup.run())
        await _until(lambda: sup.status.state == "running", 5)
        path.write_text('[modem]\napn = ""\n')  # fails validation
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: any("reload refused" in r.getMessage() for r in caplog.records), 5)
        assert sup.cfg is cfg and builds == ["sidecar"]
        _cfg_file(path, "gateway")
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: builds == ["sidecar", "gateway"], 5)
        assert sup.cfg.failover.mode.value == "gateway" and sup.app.mode.value == "gateway"
        await _until(lambda: sup.status.parts.get("flaky") is not None
                     and sup.status.parts["flaky"].state == "running", 5)
        sup.request_stop("test")
        await task

    with caplog.at_level(logging.INFO, logger="failberry.supervisor"):
        asyncio.run(scenario())
    refused = [r for r in caplog.records if "reload refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert "modem.apn" in refused[0].getMessage()


def test_io_executor_does_not_wait_for_a_wedged_call() -> None:
    ex = IoExecutor(max_workers=2, join_timeout=0.1)
    release = threading.Event()
    assert ex.submit(lambda: 6 * 7).result(timeout=5) == 42
    wedged = ex.submit(release.wait, 30)
    t0 = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - t0 < 2.0 and not wedged.done()
    assert all(t.daemon for t in ex._daemons)
    release.set()
    with pytest.raises(RuntimeError):
        ex.submit(print)


# ---------------------------------------------------------------------------------------------
# Logging


def test_journal_detected_only_for_the_stream_systemd_named(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logsetup.on_journal(a)
        assert not logsetup.on_journal(b)  # inherited variable, different stream
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not logsetup.on_journal(a)


def test_secrets_never_reach_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.toml"
    path.write_text('[modem]\napn = "internet"\nusername = "u"\npassword = "hunter2-ppp"\n'
                    'pin = "4711"\n')
    cfg = config.load(path)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    try:
        logsetup.setup()
        logsetup.redact_secrets(cfg)
        assert cfg.modem.password is not None and cfg.modem.pin is not None
        logging.getLogger("failberry.test").info("dialing with %s and PIN %s",
                                                 cfg.modem.password.reveal(),
                                                 cfg.modem.pin.reveal())
        logging.getLogger("failberry.test").info("config %s", cfg.modem)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "dialing with ******** and PIN ********" in err
    assert "hunter2" not in err and "4711" not in err
    assert "INFO" in err and "failberry.test" in err


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "failberry", "run", "-c",
                               str(EXAMPLES / "minimal.toml"), "--no-network", "--port",
                               str(port), "--listen",
                               "127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"failberry: error: cannot listen on 127.0.0.1:{port}: Address already in use" in (
        proc.stderr)
    assert "Traceback" not in proc.stderr


class _Warming:
    """A supervisor whose parts' modules take `seconds` each to import (as netlink and
    iptables do on a Pi); records each part built: (its config's mode, modules all in)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int,
                 seconds: float) -> None:
        where = tmp_path / "mods"
        where.mkdir()
        self.names = [f"fb_slow_{os.getpid()}_{i}" for i in range(count)]
        for name in self.names:
            (where / f"{name}.py").write_text(f"import time\ntime.sleep({seconds})\n")
        monkeypatch.syspath_prepend(str(where))
        self.path = _cfg_file(tmp_path / "f.toml")
        self.made: list[tuple[_Flaky, str, bool]] = []
        self.sup = Supervisor(config.load(self.path), port=0, host="127.0.0.1",
                              parts=self._parts, warm_up=self.names, config_path=self.path)

    def _parts(self, cfg: Config, status: Status, _bus: Bus) -> list[Part]:
        self.made.append((_Flaky(status, crashes=0), cfg.failover.mode.value, self.imported()))
        return [self.made[-1][0]]

    def imported(self, upto: int | None = None) -> bool:
        return all(n in sys.modules for n in self.names[:upto])

    def run(self, scenario: Callable[[asyncio.Task[None]], Awaitable[None]]) -> None:
        async def main() -> None:
            await scenario(asyncio.create_task(self.sup.run()))

        try:
            asyncio.run(main())
        finally:
            for n in self.names:
                sys.modules.pop(n, None)


async def _get_raw(port: int, path: str = "/health") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    reply = await reader.read()
    writer.close()
    return reply


@pytest.mark.timeout(30)
def test_health_answers_starting_while_the_parts_modules_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a Pi the parts' modules take seconds to import. The health server listens first and
    # the loop imports them one at a time, answering between them: /health says "starting"
    # (503, nothing is proven yet) within one module's time, never 200 before the parts run,
    # and no part is built until every module is in.
    rig = _Warming(tmp_path, monkeypatch, count=5, seconds=0.3)
    sup = rig.sup

    async def scenario(task: asyncio.Task[None]) -> None:
        await _until(lambda: sup.http.port != 0 and rig.imported(1), 5)
        asked = time.monotonic()
        reply = await _get_raw(sup.http.port)
        answered = time.monotonic() - asked
        assert reply.startswith(b"HTTP/1.1 503 ") and b"supervisor starting" in reply, reply
        assert answered < 0.9, f"/health waited {answered:.2f}s: not answered between imports"
        assert rig.made == [] and not rig.imported()
        await _until(lambda: bool(rig.made) and rig.made[0][0].runs == 1, 5)
        assert rig.made[0][2]  # built after every module was in
        await _until(lambda: sup.app.verdict().ok, 5)
        sup.request_stop("test")
        await task

    rig.run(scenario)


@pytest.mark.timeout(30)
def test_a_stop_while_the_parts_modules_import_ends_at_the_next_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = _Warming(tmp_path, monkeypatch, count=20, seconds=0.2)

    async def scenario(task: asyncio.Task[None]) -> None:
        await _until(lambda: rig.imported(2), 5)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler the supervisor installed
        asked = time.monotonic()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - asked < 1.0
        assert rig.names[-1] not in sys.modules
        assert rig.made == []  # no part built only to be stopped

    rig.run(scenario)


def test_the_parts_modules_come_lightest_first_and_follow_the_config(tmp_path: Path) -> None:
    from failberry.parts import part_modules

    full = part_modules(config.load(EXAMPLES / "failberry.toml"))
    # pyroute2's IPRoute (still seconds on a Pi): last, after the first gaps.
    assert full[0] == "failberry.pihealth.part" and full[-2:] == ["failberry.net.rtnl",
                                                                   "failberry.net.part"]
    assert "failberry.net.iptclib" in full and "failberry.modem.part" in full
    bare = part_modules(config.load(_cfg_file(tmp_path / "f.toml")), manage_network=False)
    assert "failberry.net.rtnl" not in bare and "failberry.dyndns.part" not in bare
    for name in full:  # every name is importable here, as on the image
        __import__(name)


def test_iptc_is_told_where_debians_libraries_are(tmp_path: Path) -> None:
    from failberry.net.iptclib import library_env

    lib = tmp_path / "usr/lib/aarch64-linux-gnu"
    (lib / "xtables").mkdir(parents=True)
    (lib / "libxtables.so.12").write_bytes(b"")
    (lib / "libxtables.so.12.7.0").write_bytes(b"")
    assert library_env((str(tmp_path / "usr/lib"),)) == {
        "XTABLES_LIBDIR": f"{lib}/xtables", "PYTHON_IPTABLES_XTABLES_VERSION": "12",
        "IPTABLES_LIBDIR": str(lib)}
    # No extension directory beside it: python-iptables is left to find its own way.
    (lib / "xtables").rmdir()
    assert library_env((str(tmp_path / "usr/lib"),)) == {}


@pytest.mark.timeout(30)
def test_a_reload_while_the_parts_modules_import_starts_nothing_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGHUP before the parts run: the new config is the one they are built from, and they
    # are built once, after the modules, not by the reload.
    rig = _Warming(tmp_path, monkeypatch, count=8, seconds=0.2)

    async def scenario(task: asyncio.Task[None]) -> None:
        await _until(lambda: rig.imported(2), 5)
        _cfg_file(rig.path, mode="gateway")
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: bool(rig.made) and rig.made[0][0].runs == 1, 5)
        await asyncio.sleep(0.2)
        assert rig.sup.cfg.failover.mode.value == "gateway"
        assert [(mode, modules_in) for _, mode, modules_in in rig.made] == [("gateway", True)]
        rig.sup.request_stop("test")
        await task

    rig.run(scenario)
