"""A network namespace "Pi" for the dynamic DNS root tests and bench: BIND on its loopback,
an uplink `eth1` whose far end sits in an "isp" namespace (so probes pass), a `ppp0` veth for
the mobile uplink, and `failberry run` started inside with a config of the test's making.

    [isp] eth0 203.0.113.1 --- eth1 203.0.113.2 [pi] ppp0 --- peer0 (both in pi)
                                                     eth0 192.168.50.1 --- lan0 (both in pi)
                                                     lo: named on 127.0.0.1
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyroute2 import netns

from dyndns_bind import KEY_NAME, ZONE, Named

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
if not Path(PY).exists():
    PY = sys.executable

WIRED = "203.0.113.2"
WIRED6 = "2001:db8:1::2"
MOBILE = "198.51.100.2"  # public-looking: DDNS never publishes CGNAT (100.64/10) addresses
MOBILE6 = "2001:db8:2::2"


def sh(ns: str, cmd: str) -> str:
    """A shell command inside a namespace; its stdout."""
    p = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True,
                       text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd!r} in {ns} -> {p.returncode}: {p.stderr.strip()}")
    return p.stdout


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Sockets made in this thread meanwhile belong to `ns`."""
    netns.pushns(ns)
    try:
        yield
    finally:
        netns.popns()


class PiNs:
    """The namespaces, BIND, and the supervisors started in them; `down()` removes it all."""

    def __init__(self, prefix: str, work: Path) -> None:
        self.pi, self.isp = f"{prefix}pi", f"{prefix}isp"
        self.work = work
        self.named: Named | None = None
        self.procs: list[subprocess.Popen[str]] = []

    def up(self) -> None:
        for ns in (self.pi, self.isp):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", self.pi, "link", "add", "eth1", "type", "veth", "peer",
                        "name", "eth0", "netns", self.isp], check=True)
        sh(self.isp, "ip link set lo up; ip addr add 203.0.113.1/24 dev eth0;"
                     "ip -6 addr add 2001:db8:1::1/64 dev eth0 nodad; ip link set eth0 up")
        sh(self.pi, f"ip link set lo up; ip addr add {WIRED}/24 dev eth1; ip link set eth1 up;"
                    "ip link add ppp0 type veth peer name peer0; ip link set peer0 up;"
                    "ip link add eth0 type veth peer name lan0; ip link set lan0 up;"
                    "ip addr add 192.168.50.1/24 dev eth0; ip link set eth0 up")
        self.named = Named(self.work / "named", argv_prefix=["ip", "netns", "exec", self.pi])
        with inside(self.pi):
            self.named.start()

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        if self.named is not None:
            self.named.stop()
        for ns in (self.pi, self.isp):
            subprocess.run(["ip", "netns", "del", ns], check=False)

    def query(self, host: str, rdtype: str) -> frozenset[str]:
        assert self.named is not None
        with inside(self.pi):
            return self.named.query(host, rdtype)

    def config(self, host: str, *, mode: str = "gateway", ipv6: bool = False,
               interface: str = "", run_dir: Path | None = None,
               state_dir: Path | None = None, port: int = 9000) -> Path:
        """A config for this namespace, written under `work`; returns its path."""
        assert self.named is not None
        secret = self.work / "tsig.secret"
        secret.write_text(self.named.secret + "\n")
        secret.chmod(0o600)
        run_dir = run_dir or self.work / "run"
        state_dir = state_dir or self.work / "state"
        text = f"""
[modem]
apn = "internet"
enabled = false
[lan]
interface = "eth0"
address = "192.168.50.1/24"
[uplink.wired]
interface = "eth1"
address = "{WIRED}/24"
gateway = "203.0.113.1"
probe_targets = ["icmp:203.0.113.1"]
probe_interval = "200ms"
up = 1
[uplink.mobile]
interface = "ppp0"
probe_targets = ["icmp:198.51.100.1"]
[failover]
mode = "{mode}"
hold_down = "1s"
[health]
listen = "127.0.0.1"
port = {port}
[dyndns]
provider = "rfc2136"
name = "{host}.{ZONE}"
ttl = 30
ipv6 = {str(ipv6).lower()}
interface = "{interface}"
retry_initial = "100ms"
retry_max = "1s"
[dyndns.rfc2136]
server = "127.0.0.1"
port = {self.named.port}
zone = "{ZONE}"
tsig_key_name = "{KEY_NAME}"
tsig_secret_file = "{secret}"
[paths]
run_dir = "{run_dir}"
state_dir = "{state_dir}"
"""
        path = self.work / f"{host}.toml"
        path.write_text(text)
        return path

    def run(self, cfg: Path, *extra: str, ns: str | None = None) -> subprocess.Popen[str]:
        """`failberry run` inside the namespace; its log in work/NAME.log."""
        log = (self.work / f"{cfg.stem}.log").open("a")
        p = subprocess.Popen(["ip", "netns", "exec", ns or self.pi, PY, "-m", "failberry", "-v",
                              "run", "-c", str(cfg), *extra], stdout=log,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[str]) -> int:
        """SIGTERM, as systemd does; the exit status."""
        os.killpg(p.pid, signal.SIGTERM)
        return p.wait(15)

    def status(self, port: int, ns: str | None = None) -> dict[str, Any]:
        """/status of the supervisor listening on 127.0.0.1:port in the namespace."""
        with inside(ns or self.pi), \
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def log(self, cfg: Path) -> str:
        path = self.work / f"{cfg.stem}.log"
        return path.read_text() if path.exists() else ""


def wait_for(pred: Callable[[], bool], timeout: float, what: str,
             detail: Callable[[], str] = lambda: "") -> float:
    """Poll `pred` until true; the seconds it took. Fails the test after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if pred():
                return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}\n{detail()[-4000:]}")


def unique_prefix(area: str) -> str:
    """Per-run namespace prefix."""
    return f"fb-{area}-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}-"
