"""The watcher against a real hung FUSE file system (root tier), run as its own process with the
reboot replaced by a recorder and alerts sent to a UDP socket this test listens on."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT
from hostguard_fusefs import FuseMount, mounted

HERE = Path(__file__).resolve().parent
THRESHOLD = 5.0


@dataclass
class Rig:
    """A FUSE mount, a UDP listener, and paths for the watcher's record files."""

    fs: FuseMount
    udp: socket.socket
    tmp: Path

    def config(self, threshold: float = THRESHOLD, dry_run: bool = False) -> Path:
        port = self.udp.getsockname()[1]
        path = self.tmp / "hostguard.toml"
        path.write_text(
            "[hostguard]\n"
            f'mounts = ["{self.fs.mountpoint}"]\n'
            f'threshold = "{threshold}s"\n'
            'probe_interval = "500ms"\n'
            'grace = "500ms"\n'
            f'syslog_target = "127.0.0.1:{port}"\n')
        return path

    def start_watcher(self, dry_run: bool = False,
                      new_session: bool = False) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(HERE / "hostguard_runner.py"), str(self.config()),
                str(self.tmp / "reboots"), str(self.tmp / "kmsg")]
        (self.tmp / "kmsg").touch()  # stands in for /dev/kmsg, which exists already
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{HERE}")
        with open(self.tmp / "watcher.log", "ab") as log:
            return subprocess.Popen([*args, *(["--dry-run"] if dry_run else [])], env=env,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=new_session)

    def receive(self, msgid: str, timeout: float) -> str:
        """The next syslog message with this MSGID."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.udp.settimeout(left)
            try:
                data = self.udp.recv(65536)
            except TimeoutError:
                break
            text = data.decode("utf-8", "replace")
            fields = text.split(" ", 6)
            if len(fields) > 5 and fields[5] == msgid:
                return text
        raise AssertionError(f"no {msgid} alert within {timeout}s")


def _writer(path: Path) -> subprocess.Popen[bytes]:
    code = ("import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600); "
            "os.write(fd, b'x' * 100); os.fsync(fd)")
    return subprocess.Popen([sys.executable, "-c", code, str(path)],
                            stderr=subprocess.DEVNULL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    fs = FuseMount(tmp_path / "mnt", tmp_path / "control.sock")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        yield Rig(fs, udp, tmp_path)
    finally:
        udp.close()
        fs.close()
        assert not mounted(fs.mountpoint)


def _stop(proc: subprocess.Popen[bytes], log: Path) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return log.read_text(errors="replace")


def _gone(pids: list[int], timeout: float = 15) -> list[int]:
    """Pids still present (and not zombies) after waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _state(p) not in ("", "Z")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_hung_fuse_mount_is_reported_and_reboot_requested_in_time(rig: Rig) -> None:
    watcher = rig.start_watcher()
    writers: list[subprocess.Popen[bytes]] = []
    probe_pid = 0
    try:
        rig.receive("START", timeout=15)
        probe_file = rig.fs.mountpoint / ".failberry-hostguard-probe"
        deadline = time.monotonic() + 10
        while not probe_file.exists():  # the probes work before the hang
            assert time.monotonic() < deadline, "no probe reached the FUSE mount"
            time.sleep(0.1)

        rig.fs.hang()
        hang_at = time.monotonic()
        # The first writer waits for the FUSE answer; the second queues behind its page lock in
        # uninterruptible sleep (D): the kind of task the alert must name.
        data = rig.fs.mountpoint / "data"
        writers.append(_writer(data))
        time.sleep(0.3)
        writers.append(_writer(data))
        deadline = time.monotonic() + 5
        while _state(writers[1].pid) != "D":
            assert time.monotonic() < deadline, "second writer never reached D state"
            time.sleep(0.05)

        alert = rig.receive("HUNG", timeout=THRESHOLD + 10)
        assert f'mount="{rig.fs.mountpoint}"' in alert
        assert f"mount {rig.fs.mountpoint} hung" in alert
        assert re.search(rf"\b{writers[1].pid} \S+ D [0-9.]+s wchan=\S+", alert), alert
        match = re.search(r"probe pid (\d+) \(hostguard-probe\) state (\w)", alert)
        assert match, alert
        probe_pid = int(match.group(1))

        record = rig.tmp / "reboots"
        deadline = time.monotonic() + THRESHOLD + 10
        while not record.exists() or not record.read_text():
            assert time.monotonic() < deadline, "no reboot requested"
            time.sleep(0.05)
        requested_at = float(record.read_text().split()[0])
        assert requested_at - hang_at <= THRESHOLD + 2, requested_at - hang_at
        assert len(record.read_text().splitlines()) == 1
        kmsg = (rig.tmp / "kmsg").read_text()
        assert f"failberry-hostguard: HUNG: mount {rig.fs.mountpoint} hung" in kmsg
    finally:
        log = _stop(watcher, rig.tmp / "watcher.log")
        # Release the hang by aborting the connection, as an operator would.
        if not rig.fs.abort():
            rig.fs.kill_server()
        for w in writers:
            try:
                w.wait(timeout=15)
            except subprocess.TimeoutExpired:
                w.kill()
    assert all(w.returncode != 0 for w in writers), "writes to an aborted mount must fail"
    assert _gone([w.pid for w in writers] + ([probe_pid] if probe_pid else [])) == [], log
    rig.fs.close()
    assert not mounted(rig.fs.mountpoint)


@pytest.mark.root
@pytest.mark.timeout(120)
def test_dry_run_alerts_only_and_sees_the_mount_recover(rig: Rig) -> None:
    watcher = rig.start_watcher(dry_run=True)
    writer = None
    try:
        rig.receive("START", timeout=15)
        time.sleep(1.0)
        rig.fs.hang()
        writer = _writer(rig.fs.mountpoint / "data")
        alert = rig.receive("HUNG", timeout=THRESHOLD + 10)
        assert "dry run, not rebooting" in alert and 'action="none"' in alert
        rig.fs.answer()
        recovered = rig.receive("RECOVERED", timeout=10)
        assert f"mount {rig.fs.mountpoint} answered again" in recovered
        writer.wait(timeout=10)
        assert writer.returncode == 0
        time.sleep(1.0)
        assert not (rig.tmp / "reboots").exists()
    finally:
        log = _stop(watcher, rig.tmp / "watcher.log")
        if writer is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                writer.wait(timeout=15)
            if writer.poll() is None:
                rig.fs.kill_server()
                writer.wait(timeout=15)
    assert "Traceback" not in log, log


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _children(pid: int) -> list[int]:
    """The live children of a process (from every /proc/N/stat: no CONFIG_PROC_CHILDREN)."""
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and _ppid(int(n)) == pid]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def _blocked_probe(watcher: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """The watcher's probe child, once it waits in the kernel for the hung mount's answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _children(watcher.pid):
            if _wchan(pid) == "request_wait_answer":
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no probe child of {watcher.pid} blocked in FUSE: "
                         f"{[(p, _state(p), _wchan(p)) for p in _children(watcher.pid)]}")


def _never_in_d(pids: list[int], seconds: float) -> None:
    """Sample the tasks' states for a while: none may enter D."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = {pid: (_state(pid), _wchan(pid)) for pid in pids}
        assert all(state != "D" for state, _ in states.values()), states
        time.sleep(0.05)


@pytest.mark.root
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "restart"])
def test_stopping_during_a_hang_leaves_no_task_of_ours_in_d_state(rig: Rig, how: str) -> None:
    """A FUSE writer waits interruptibly (S) until a fatal signal arrives; from then on it waits
    uninterruptibly (D), which hung_task_panic counts. Stopping the watcher, by SIGTERM or by a
    terminal's Ctrl-C to its whole process group, or restarting it while the mount still hangs,
    must leave every probe child in S; the children finish by themselves once the mount
    answers."""
    probe_file = rig.fs.mountpoint / ".failberry-hostguard-probe"
    ours: list[int] = []
    watchers: list[subprocess.Popen[bytes]] = []
    try:
        watchers.append(rig.start_watcher(dry_run=True, new_session=how == "ctrl-c"))
        rig.receive("START", timeout=15)
        deadline = time.monotonic() + 10
        while not probe_file.exists():
            assert time.monotonic() < deadline, "no probe reached the FUSE mount"
            time.sleep(0.1)
        rig.fs.hang()
        ours.append(_blocked_probe(watchers[0]))
        if how == "ctrl-c":
            os.killpg(watchers[0].pid, signal.SIGINT)
            watchers[0].wait(timeout=10)
        else:
            _stop(watchers[0], rig.tmp / "watcher.log")
        assert watchers[0].returncode == 0
        _never_in_d(ours, 2.0)
        # Not killed: still waiting for the mount's answer, interruptibly.
        assert (_state(ours[0]), _wchan(ours[0])) == ("S", "request_wait_answer")
        if how == "restart":
            # A new watcher while the old child still waits: its child must not queue behind
            # the old one's locks on the probe file (that wait would be uninterruptible).
            watchers.append(rig.start_watcher(dry_run=True))
            rig.receive("START", timeout=15)
            deadline = time.monotonic() + 10
            while not (new := _children(watchers[1].pid)):
                assert time.monotonic() < deadline, "the new watcher has no probe child"
                time.sleep(0.05)
            ours += new
            _never_in_d(ours, 2.0)
            # It waits for the old child's slot, in S, instead of the old child's locks.
            assert [(_state(p), _comm(p)) for p in new] == [("S", "hostguard-wait")]
            alert = rig.receive("HUNG", timeout=THRESHOLD + 10)  # the mount is still hung
            assert "(hostguard-wait) state S" in alert, alert
            _stop(watchers[1], rig.tmp / "watcher.log")
            _never_in_d(ours, 1.0)
            assert _gone(new, timeout=5) == []  # it never reached the mount: it quits at once
            assert (_state(ours[0]), _wchan(ours[0])) == ("S", "request_wait_answer")
        rig.fs.answer()
        # Released, every child of ours finishes its probe, sees the watcher gone and exits,
        # taking the probe file with it (the watcher asked it to quit).
        assert _gone(ours, timeout=10) == []
        deadline = time.monotonic() + 5
        while probe_file.exists():
            assert time.monotonic() < deadline, "the probe file was left behind"
            time.sleep(0.05)
    finally:
        for w in watchers:
            _stop(w, rig.tmp / "watcher.log")
        with contextlib.suppress(Exception):
            rig.fs.answer()  # a child released is in no kernel wait: killing it is harmless
        for pid in _gone(ours, timeout=5):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    log = (rig.tmp / "watcher.log").read_text(errors="replace")
    assert "Traceback" not in log, log
