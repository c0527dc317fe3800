"""`failberry run` itself, the real command in a subprocess, with the modem part built by
`failberry.modem.part.build`: the fake ZTE stick on ptys under /dev/shm (the config wants device
paths under /dev), the stand-in pppd through `[modem] pppd`, pppd's files and the reboot log
in `[paths]` directories of the test, and `[recovery] reboot_command` a harmless command."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

import typed_status
from conftest import SSH_KEY, free_port, remove_namespace
from failberry.reports import ModemReport
from modem_fakes.control import ctl
from modem_fakes.rig import FAKES

pytestmark = [pytest.mark.root]


@dataclass
class Stick:
    """The fake stick's ports and the namespace the stand-in pppd makes ppp0 in."""

    dev: Path
    ns: str
    tmp: Path

    def ctl(self, **order: Any) -> Any:
        return ctl(self.dev / "ctl", order)

    def ppp0_up(self) -> bool:
        out = subprocess.run(["ip", "-n", self.ns, "-j", "addr", "show", "dev", "ppp0"],
                             capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.strip():
            return False
        link = json.loads(out.stdout)[0]
        return "UP" in link["flags"] and any(a["local"] == "10.64.64.64"
                                             for a in link["addr_info"])


@contextlib.contextmanager
def stick(tmp: Path, scenario: dict[str, Any]) -> Iterator[Stick]:
    dev = Path(tempfile.mkdtemp(prefix="fb-modem-", dir="/dev/shm"))
    ns = f"fb-run-{os.getpid()}-{dev.name[-6:]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = subprocess.Popen([sys.executable, str(FAKES / "fake_modem.py"), str(dev),
                             json.dumps(scenario)])
    try:
        deadline = time.monotonic() + 10
        while not ((dev / "ctl").exists() and (dev / "ttyUSB2").exists()):
            assert time.monotonic() < deadline, "the fake stick did not start"
            time.sleep(0.02)
        yield Stick(dev, ns, tmp)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        remove_namespace(ns)
        shutil.rmtree(dev, ignore_errors=True)


def write_config(st: Stick, recovery: str, reboot_command: list[str]) -> Path:
    pppd = st.tmp / "pppd"
    pppd.write_text(f"#!/bin/sh\nexec ip netns exec {st.ns} {sys.executable} "
                    f"{FAKES / 'fake_pppd.py'} --control {st.tmp} \"$@\"\n")
    pppd.chmod(0o755)
    cfg = st.tmp / "failberry.toml"
    cfg.write_text(f"""
[admin]
ssh_authorized_keys = ["{SSH_KEY}"]

[modem]
apn = "internet"
device = "{st.dev / 'ttyUSB2'}"
at_port = "{st.dev / 'ttyUSB1'}"
pppd = "{pppd}"

[recovery]
{recovery}
reboot_command = {json.dumps(reboot_command)}

[paths]
run_dir = "{st.tmp / 'run'}"
state_dir = "{st.tmp / 'state'}"
""")
    return cfg


@contextlib.contextmanager
def supervisor(cfg: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "failberry", "run", "-c", str(cfg), "--no-network",
         "--port", str(port), "--listen", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get(port: int, path: str, timeout: float = 2.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def modem(port: int) -> dict[str, Any]:
    try:
        _, snap = get(port, "/status")
    except OSError:
        return {}
    part: dict[str, Any] = snap.get("parts", {}).get("modem", {})
    return part


def output(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    return proc.stdout.read() if proc.stdout else ""


@pytest.mark.timeout(60)
def test_failberry_run_cold_stick_to_ppp0_with_monitoring(tmp_path: Path) -> None:
    # Cold: the stick searches, registers 0.3 s later and says so with `+CREG: 2,1,...`.
    with stick(tmp_path, {"reg": 2, "urc_n": True, "register_after": 0.3}) as st:
        port = free_port()
        cfg = write_config(st, "", ["true"])
        t0 = time.monotonic()
        with supervisor(cfg, port) as proc:
            m: dict[str, Any] = {}
            while m.get("state") != "connected":
                assert proc.poll() is None, output(proc)
                assert time.monotonic() - t0 < 20, (m, output(proc))
                time.sleep(0.02)
                m = modem(port)
            took = time.monotonic() - t0
            assert took < 3.0, f"cold start to connected took {took:.2f}s"
            assert st.ppp0_up()
            assert (m["interface"], m["address"]) == ("ppp0", "10.64.64.64")
            # monitored on the AT port while pppd holds the data port
            deadline = time.monotonic() + 2
            while m.get("operator") is None and time.monotonic() < deadline:
                time.sleep(0.05)
                m = modem(port)
            assert m["state"] == "connected"
            assert m["signal_dbm"] == -79 and m["operator"] == "Vodafone UK", m
            assert m["registration"] == "home" and m["port"] == str(st.dev / "ttyUSB1")
            assert (tmp_path / "run" / "ppp" / "failberry").exists()  # [paths] run_dir
            # The real parts' /status sections, the modem's with the stick connected, read
            # back strictly as the dataclasses the readers and the fake parts use.
            _, doc = get(port, "/status")
            typed = typed_status.check(doc)
            assert "modem" in typed and set(typed) <= set(doc["parts"]), (typed, doc)
            rep = typed["modem"]
            assert isinstance(rep, ModemReport)
            written, names = (set(typed_status.detail(doc["parts"]["modem"])),
                              {f.name for f in fields(ModemReport)})
            # every fact written, none extra; one that is absent is left out, not null
            assert written <= names and all(getattr(rep, n) is None for n in names - written)
            assert (rep.interface, rep.address, rep.data_path) == ("ppp0", "10.64.64.64", "ppp")
            assert rep.signal_dbm == -79 and rep.operator == "Vodafone UK", rep
            assert rep.registration == "home" and rep.private_address is True  # 10/8
            assert rep.ladder_rung is None and rep.ladder_counts == dict.fromkeys(
                ("redial", "modem_reset", "usb_rebind", "port_power", "reboot"), 0)
        log = output(proc)
        assert "modem dialing -> connected" in log, log


@pytest.mark.timeout(60)
def test_health_answers_while_the_reboot_command_hangs(tmp_path: Path) -> None:
    # Registration never comes; every rung but the reboot is off: the reboot command runs
    # after registration_timeout, and it hangs for 20 s.
    recovery = ("registration_timeout = 5\nredial_limit = 0\nmodem_reset_limit = 0\n"
                "usb_rebind_limit = 0\nport_power_limit = 0\nreboots_per_day = 1\n"
                "backoff_initial = 0.05\nbackoff_max = 0.2")
    marker = tmp_path / "rebooting"
    with stick(tmp_path, {"reg": 2}) as st:
        port = free_port()
        cfg = write_config(st, recovery, ["sh", "-c", f"echo $$ > {marker}; exec sleep 20"])
        with supervisor(cfg, port) as proc:
            deadline = time.monotonic() + 20
            while not (marker.exists() and marker.read_text().strip()):
                assert proc.poll() is None, output(proc)
                assert time.monotonic() < deadline, output(proc)
                time.sleep(0.05)
            pid = int(marker.read_text())
            worst = 0.0
            for _ in range(30):
                t = time.monotonic()
                code, body = get(port, "/health", timeout=5)
                worst = max(worst, time.monotonic() - t)
                assert code in (200, 503) and "status" in body
                time.sleep(0.05)
            assert worst < 0.1, f"/health took {worst * 1000:.0f} ms while rebooting"
            assert modem(port)["state"] == "rebooting"
            assert os.path.exists(f"/proc/{pid}")  # still hanging: we did not wait it out
            assert json.loads((tmp_path / "state" / "reboots.json").read_text())
        output(proc)
        # stopping the supervisor stops the reboot command too
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
