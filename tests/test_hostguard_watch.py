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

    def start_watcher(self, dry_run: bool = False) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(HERE / "hostguard_runner.py"), str(self.config()),
                str(self.tmp / "reboots"), str(self.tmp / "kmsg")]
        (self.tmp / "kmsg").touch()  # stands in for /dev/kmsg, which exists already
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{HERE}")
        with open(self.tmp / "watcher.log", "wb") as log:
            return subprocess.Popen([*args, *(["--dry-run"] if dry_run else [])], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)

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
        match = re.search(r"probe pid (\d+) state (\w)", alert)
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
