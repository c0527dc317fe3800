"""The watcher's parts without FUSE: /proc parsing on fake trees, the syslog wire format on a
real loopback socket, the kernel-log sink, netconsole planning, and the watcher's decisions
driven by a fake clock with real probe children writing into a temporary directory."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_cli
from failberry.config import HostguardConfig
from failberry.hostguard import alert, dstate, netconsole, probe, watcher


def test_parse_stat_with_awkward_comm() -> None:
    rest = " ".join(["1"] * 18 + ["4242"] + ["0"] * 20)
    line = dstate.parse_stat(f"77 (my (odd) prog) D {rest}")
    assert line == dstate.StatLine(77, "my (odd) prog", "D", 4242)
    assert dstate.parse_stat("garbage") is None


def _fake_task(proc: Path, tgid: int, tid: int, comm: str, state: str, *, start: int,
               wchan: str = "io_schedule") -> None:
    d = proc / str(tgid) / "task" / str(tid)
    d.mkdir(parents=True, exist_ok=True)
    rest = " ".join(["1"] * 18 + [str(start)] + ["0"] * 20)
    (d / "stat").write_text(f"{tid} ({comm}) {state} {rest}\n")
    (d / "wchan").write_text(wchan)


def test_dstate_scanner_tracks_how_long_tasks_stay(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _fake_task(proc, 10, 10, "dd", "D", start=100, wchan="folio_wait_bit_common")
    _fake_task(proc, 20, 20, "idle", "S", start=100)
    _fake_task(proc, 30, 31, "postgres worker", "D", start=200, wchan="nfs_wait_bit_killable")
    scanner = dstate.DStateScanner(proc)
    first = scanner.scan(now=1000.0)
    assert [(t.pid, t.since) for t in first] == [(10, 1000.0), (31, 1000.0)]
    # pid 31 leaves D state, then returns: its clock starts again; pid 10 keeps its start.
    _fake_task(proc, 30, 31, "postgres worker", "R", start=200)
    assert [t.pid for t in scanner.scan(now=1002.0)] == [10]
    _fake_task(proc, 30, 31, "postgres worker", "D", start=200, wchan="nfs_wait_bit_killable")
    tasks = scanner.scan(now=1004.0)
    assert [(t.pid, t.since) for t in tasks] == [(10, 1000.0), (31, 1004.0)]
    assert tasks[0].describe(1004.0) == "10 dd D 4.0s wchan=folio_wait_bit_common"
    assert tasks[1].describe(1005.0) == "30/31 postgres worker D 1.0s wchan=nfs_wait_bit_killable"
    # A reused pid (new start time) is a new task.
    _fake_task(proc, 10, 10, "dd", "D", start=999)
    assert {t.pid: t.since for t in scanner.scan(now=1006.0)} == {31: 1004.0, 10: 1006.0}


def test_pressure_line(tmp_path: Path) -> None:
    p = tmp_path / "io"
    p.write_text("some avg10=1.50 avg60=0.30 avg300=0.10 total=123\n"
                 "full avg10=1.00 avg60=0.20 avg300=0.05 total=99\n")
    assert dstate.read_pressure(p) == ("some avg10=1.50 avg60=0.30 avg300=0.10; "
                                       "full avg10=1.00 avg60=0.20 avg300=0.05")
    assert dstate.read_pressure(tmp_path / "missing") == ""


def test_rfc5424_format() -> None:
    data = alert.format_rfc5424("mount /srv hung", severity=alert.SEVERITY_CRIT,
                                hostname="db1", procid=99, msgid="HUNG",
                                params=[("mount", 'we"ird]')], epoch=1700000000.25)
    assert data == (b'<26>1 2023-11-14T22:13:20.250000Z db1 failberry-hostguard 99 HUNG '
                    b'[hostguard@32473 mount="we\\"ird\\]"] \xef\xbb\xbfmount /srv hung')
    long = alert.format_rfc5424("x" * 5000, severity=2, hostname="h", procid=1, msgid="M")
    assert len(long) == alert.MAX_DATAGRAM


def test_udp_and_kmsg_sinks(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        udp = alert.UdpSyslog(f"127.0.0.1:{rx.getsockname()[1]}", hostname="srv")
        kfile = tmp_path / "kmsg"
        kfile.touch()
        sinks = alert.Alerter([udp, alert.Kmsg(str(kfile))])
        assert sinks.send(alert.SEVERITY_CRIT, "HUNG", "mount /srv hung " + "y" * 1000,
                          [("mount", "/srv")])
        got = rx.recv(4096).decode()
    assert got.startswith("<26>1 ") and " srv failberry-hostguard " in got
    assert 'HUNG [hostguard@32473 mount="/srv"]' in got
    lines = kfile.read_text().splitlines()
    assert len(lines) == 2 and all(x.startswith("<2>failberry-hostguard: ") for x in lines)
    with pytest.raises(alert.AlertError, match="does not resolve"):
        alert.UdpSyslog("no-such-host.invalid:514")


def test_mount_points() -> None:
    info = ("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
            "40 22 0:50 / /mnt/my\\040disk rw - fuse x rw\n")
    assert watcher.mount_points(info) == {"/", "/mnt/my disk"}


class _Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def reboot(self, reason: str) -> None:
        self.reasons.append(reason)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, severity: int, msgid: str, message: str,
             params: object) -> bool:
        self.sent.append((msgid, message))
        return True


def _wait_answer(w: watcher.Watcher, m: watcher.MountState) -> None:
    """Block (bounded) until the probe child answered, without advancing the fake clock."""
    ready, _, _ = select.select([m.worker.reply_r], [], [], 10)
    assert ready, "probe child did not answer"
    w.wait(0)


def _reaped(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.05)
    return False


def _release_fifo(path: Path) -> None:
    """Let a probe child that is stuck opening a FIFO go (after a failed test, too)."""
    # The child removes its probe file once it got through: gone between the two calls is fine.
    with contextlib.suppress(FileNotFoundError):
        if path.is_fifo():
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))


def test_watcher_decisions_with_a_fake_clock(tmp_path: Path) -> None:
    cfg = HostguardConfig(mounts=(str(tmp_path),), probe_interval=2.0, threshold=20.0,
                          grace=0.0)
    clock, sink, rec = _Clock(), _Sink(), _Recorder()
    w = watcher.Watcher(cfg, alerter=alert.Alerter([sink]), rebooter=rec, clock=clock,
                        scanner=dstate.DStateScanner(tmp_path / "noproc"))
    w.start()
    try:
        m = w.mounts[0]
        assert w.step(clock()) == 2.0  # the next scan; a probe is in flight
        assert m.started == 0.0
        _wait_answer(w, m)
        assert m.started is None and m.next_probe == 2.0
        assert (tmp_path / probe.PROBE_FILE).read_bytes() == probe.PAYLOAD
        # An answer that sits in the pipe while we were late (starved, VM paused) is no hang.
        clock.now = 2.0
        w.step(clock())
        select.select([m.worker.reply_r], [], [], 10)
        clock.now = 40.0
        w.step(clock())
        assert not m.hung and not rec.reasons and m.started is None
        # A FIFO in place of the probe file: the child's open(2) blocks, like a hung mount.
        (tmp_path / probe.PROBE_FILE).unlink()
        os.mkfifo(tmp_path / probe.PROBE_FILE)
        clock.now = 42.0
        w.step(clock())
        assert m.started == 42.0
        clock.now = 61.9
        w.step(clock())
        assert not m.hung and not rec.reasons
        clock.now = 62.0
        w.step(clock())
        assert m.hung
        assert rec.reasons == [f"mount {tmp_path} hung for 20.0s"]
        hung = [text for msgid, text in sink.sent if msgid == "HUNG"]
        assert len(hung) == 1 and f"mount {tmp_path} hung" in hung[0]
        assert "rebooting in 0s" in hung[0]
        # The mount answers (a reader opens the FIFO): recovered, and no second reboot.
        reader = os.open(tmp_path / probe.PROBE_FILE, os.O_RDONLY | os.O_NONBLOCK)
        try:
            _wait_answer(w, m)
        finally:
            os.close(reader)
        assert not m.hung
        assert [msgid for msgid, _ in sink.sent][:2] == ["HUNG", "RECOVERED"]
        clock.now = 100.0
        w.step(clock())
        assert len(rec.reasons) == 1
        # Stopping while a probe hangs leaves its child alone (a signal could put a child that
        # waits on a hung mount into D state); it quits by itself once the probe is done.
        assert m.started == 100.0
        pid = m.worker.pid
        w.close()
        time.sleep(0.2)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
        reader = os.open(tmp_path / probe.PROBE_FILE, os.O_RDONLY | os.O_NONBLOCK)
        os.close(reader)
        assert _reaped(pid, timeout=10)
    finally:
        w.close()
        _release_fifo(tmp_path / probe.PROBE_FILE)


def test_watcher_reports_probe_errors_without_rebooting(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    (target / probe.PROBE_FILE).mkdir()  # opening it for writing fails with EISDIR
    cfg = HostguardConfig(mounts=(str(target),), probe_interval=1.0, threshold=5.0, grace=0.0)
    clock, sink, rec = _Clock(), _Sink(), _Recorder()
    w = watcher.Watcher(cfg, alerter=alert.Alerter([sink]), rebooter=rec, clock=clock,
                        scanner=dstate.DStateScanner(tmp_path / "noproc"))
    w.start()
    try:
        w.step(clock())
        _wait_answer(w, w.mounts[0])
        assert sink.sent and sink.sent[0][0] == "PROBE-ERROR"
        assert "Is a directory" in sink.sent[0][1]
        assert not rec.reasons
        # A child that dies is replaced.
        old = w.mounts[0].worker.pid
        w.mounts[0].worker.abandon()
        w.mounts[0].worker.cmd_w = os.open(os.devnull, os.O_WRONLY)  # closed pipe stand-in
        w.respawn(w.mounts[0], "test")
        assert w.mounts[0].worker.pid not in (0, old)
    finally:
        w.close()


def test_netconsole_plan_and_configfs(tmp_path: Path) -> None:
    route = {"dst": "192.0.2.10", "gateway": "10.0.0.1", "dev": "eth0", "prefsrc": "10.0.0.5"}
    neigh = [{"dst": "10.0.0.1", "dev": "eth0", "lladdr": "52:54:00:12:34:56"}]
    p = netconsole.plan("192.0.2.10", 5514, route, neigh)
    assert p.module_parameter() == ("netconsole=6665@10.0.0.5/eth0,"
                                    "5514@192.0.2.10/52:54:00:12:34:56")
    with pytest.raises(netconsole.NetconsoleError, match=r"ping 10\.0\.0\.1"):
        netconsole.plan("192.0.2.10", 5514, route, [])
    configfs = tmp_path / "netconsole"
    with pytest.raises(netconsole.NetconsoleError, match="modprobe netconsole"):
        netconsole.apply(p, configfs)
    configfs.mkdir()
    assert netconsole.apply(p, configfs)
    target = configfs / netconsole.TARGET
    assert (target / "remote_mac").read_text() == "52:54:00:12:34:56"
    assert (target / "enabled").read_text() == "1"
    assert netconsole.apply(p, configfs) == []  # idempotent


def test_watch_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "hg.toml"
    cfg.write_text('[hostguard]\nmounts = ["relative"]\n')
    proc = run_cli(["hostguard", "watch", "-c", str(cfg), "--dry-run"], timeout=30)
    assert proc.returncode == 2
    assert "hostguard.mounts" in proc.stderr and "Traceback" not in proc.stderr


def test_shipped_unit() -> None:
    import configparser
    import importlib.resources

    unit = importlib.resources.files("failberry") / "data/failberry-hostguard.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "always"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].split()[1:4] == ["hostguard", "watch", "-c"]
    assert service["LimitMEMLOCK"] == "infinity"
    assert service["KillMode"] == "process"  # systemd never kills a probe child (see probe)
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.root
@pytest.mark.timeout(60)
def test_watch_command_notifies_systemd_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real `failberry hostguard watch --dry-run`: READY, watchdog pings, clean exit."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "data"
    target.mkdir()
    cfg = tmp_path / "hg.toml"
    cfg.write_text(f'[hostguard]\nmounts = ["{target}"]\nprobe_interval = "200ms"\n'
                   'threshold = "5s"\n')
    sock_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(sock_path))
        notify.settimeout(10)
        env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
        proc = subprocess.Popen([sys.executable, "-m", "failberry", "hostguard", "watch", "-c",
                                 str(cfg), "--dry-run"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            got: list[str] = []
            deadline = time.monotonic() + 10
            while got.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
                got += notify.recv(4096).decode().splitlines()
            assert "READY=1" in got and got.count("WATCHDOG=1") >= 3, got
            assert (target / probe.PROBE_FILE).read_bytes() == probe.PAYLOAD
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=10)[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    # A clean stop takes the probe file away with it.
    deadline = time.monotonic() + 5
    while (target / probe.PROBE_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (target / probe.PROBE_FILE).exists()


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_probe_child_takes_no_signal_and_waits_its_turn(tmp_path: Path) -> None:
    """A probe child blocked in the mount ignores every signal but SIGKILL/SIGSTOP (a fatal
    one would turn a FUSE or NFS wait into D state), sits in its own session (no Ctrl-C from the
    terminal), and a second child for the same mount waits for the first one's slot (in S)
    instead of queueing behind its locks."""
    fifo = tmp_path / probe.PROBE_FILE
    os.mkfifo(fifo)  # opening it for writing blocks until a reader comes: a hang
    first, second = probe.ProbeWorker(str(tmp_path)), probe.ProbeWorker(str(tmp_path))
    first.spawn()
    try:
        assert first.go()
        _wait_for("first child never blocked on the FIFO",
                  lambda: dstate.DStateScanner().task(first.pid) == ("S", "wait_for_partner",
                                                                      "hostguard-probe"))
        assert os.getsid(first.pid) == first.pid
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGUSR1, signal.SIGPIPE, signal.SIGALRM):
            os.kill(first.pid, sig)
        time.sleep(0.2)
        assert dstate.DStateScanner().task(first.pid) == ("S", "wait_for_partner",
                                                          "hostguard-probe")
        second.spawn()
        assert second.go()
        _wait_for("second child never waited for the slot",
                  lambda: _comm(second.pid) == "hostguard-wait")
        task = dstate.DStateScanner().task(second.pid)
        assert task is not None and task[0] == "S", task
        # The mount answers: the first probe completes (a FIFO cannot be fsynced: an error
        # reply, which is an answer), then the second one gets the slot and answers too.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            for worker in (first, second):
                select.select([worker.reply_r], [], [], 10)
                reply = worker.read_reply()
                assert reply is not None and not reply.ok and "Invalid argument" in reply.error
        finally:
            os.close(reader)
        assert _comm(second.pid) == "hostguard-probe"
    finally:
        for worker in (first, second):
            worker.abandon()
        _release_fifo(fifo)
        for worker in (first, second):
            if worker.pid:
                assert _reaped(worker.pid, timeout=10)
