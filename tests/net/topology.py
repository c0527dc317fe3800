"""A namespace topology with real packets: a LAN host, the Pi, a wired ISP, a mobile ISP (its
link to the Pi a veth named `ppp0`, point-to-point addressed like pppd does it) and an
"internet" holding three probe targets and a server. Nothing touches the root namespace.

    lan (192.168.50.10, .11) -- eth0 [pi] eth1 203.0.113.2 -- [wisp] -- 10.1.0.0/30 --+
                                          ppp0 100.64.0.2 -- [misp] -- 10.2.0.0/30 --+-- [inet]
    inet: targets 192.0.2.1-3, server 192.0.2.80, and the example config's targets 1.1.1.1,
          8.8.8.8, 9.9.9.9 (test-only copies: nothing leaves the namespaces)

With `delay_ms`, the two ISP-to-internet links are TUN devices joined by a relay
(tests/net/latency.py) that holds each packet `delay_ms` in each direction: probe replies then
come a round trip later, as on a real network, instead of before `sendto` returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latency import tun_link
from pyroute2 import netns

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
if not Path(PY).exists():
    PY = sys.executable

SERVER = "192.0.2.80"
TARGETS = ("192.0.2.1", "192.0.2.2", "192.0.2.3")
EXAMPLE_TARGETS = ("1.1.1.1", "8.8.8.8", "9.9.9.9")  # examples/failberry.toml's probe targets
WIRED_ADDR = "203.0.113.2"
MOBILE_ADDR = "100.64.0.2"
LAN_HOST = "192.168.50.10"
LAN_OTHER = "192.168.50.11"


BASE_CONFIG = """
[modem]
apn = "internet"
[lan]
interface = "eth0"
address = "192.168.50.1/24"
[uplink.wired]
interface = "eth1"
address = "203.0.113.2/24"
gateway = "203.0.113.1"
probe_targets = {wired_targets}
[uplink.mobile]
interface = "ppp0"
probe_targets = ["icmp:192.0.2.1", "icmp:192.0.2.2", "icmp:192.0.2.3"]
probe_interval = "500ms"
[failover]
mode = "gateway"
hold_down = "{hold_down}"
quorum = {quorum}
loss_threshold = {loss}
allowed_devices = ["192.168.50.10"]
[firewall]
allow_tcp = [9000]
"""


EXAMPLE_PROBES_CONFIG = """
[lan]
interface = "eth0"
address = "192.168.50.1/24"
[uplink.wired]
interface = "eth1"
address = "203.0.113.2/24"
gateway = "203.0.113.1"
[uplink.mobile]
interface = "ppp0"
[failover]
mode = "{mode}"
{hold_down}
[modem]
apn = "internet"
enabled = false
[recovery]
reboots_per_day = 0
reboot_command = ["true"]
[paths]
run_dir = "{tmp}/run"
state_dir = "{tmp}/state"
"""


def example_probes_config(tmp: Path, mode: str = "gateway", hold_down: str = "") -> str:
    """A config naming only this topology's interfaces and addresses, the mode and the paths:
    every probe setting (targets, quorum, intervals, counts) is the example's default. No modem
    part; `hold_down` overrides the example's 30 s when given."""
    return EXAMPLE_PROBES_CONFIG.format(
        mode=mode, tmp=tmp, hold_down=f'hold_down = "{hold_down}"' if hold_down else "")


def config_text(wired_targets: str = '["icmp:192.0.2.1", "icmp:192.0.2.2", '
                '"tcp:192.0.2.80:8080"]', hold_down: str = "1s", quorum: int = 0,
                loss: float = 50) -> str:
    """The test config: the topology's interfaces and targets."""
    return BASE_CONFIG.format(wired_targets=wired_targets, hold_down=hold_down, quorum=quorum,
                              loss=loss)


def run(argv: list[str], check: bool = True, timeout: float = 30) -> str:
    """Run a command; its stdout."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.strip()}")
    return p.stdout


class Namespaces:
    """Network namespaces named `self.ns` (role -> name) and the processes run in them; a
    subclass builds them in `up()`, and `down()` always removes both."""

    def __init__(self, ns: dict[str, str]) -> None:
        self.ns = ns
        self.procs: list[subprocess.Popen[str]] = []

    def sh(self, ns: str, cmd: str, check: bool = True) -> str:
        """A shell command inside one of our namespaces."""
        return run(["ip", "netns", "exec", self.ns[ns], "sh", "-c", cmd], check=check)

    def spawn(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """A process inside a namespace, killed by `down()`."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns], *argv], text=True,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def down(self) -> None:
        """Kill our processes, delete our namespaces."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        for name in self.ns.values():
            run(["ip", "netns", "del", name], check=False)

    @contextlib.contextmanager
    def inside(self, ns: str = "inet") -> Iterator[None]:
        """Make sockets in a namespace from this process (they stay there once made); by
        default the outside host's."""
        netns.pushns(self.ns[ns])
        try:
            yield
        finally:
            netns.popns()

    def get_json(self, ns: str, port: int, path: str,
                 timeout: float = 3.0) -> tuple[int, dict[str, Any]]:
        """One HTTP GET to `port` on the loopback of namespace `ns`: (code, JSON body)."""
        with self.inside(ns):
            s = socket.socket()
        with s:
            s.settimeout(timeout)
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {ns}\r\nConnection: close\r\n\r\n"
                      .encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

class Topology(Namespaces):
    """Build with `up()`, always `down()`."""

    def __init__(self, prefix: str, delay_ms: float = 0) -> None:
        super().__init__({k: f"{prefix}{k}" for k in ("lan", "pi", "wisp", "misp", "inet")})
        self.prefix = prefix
        self.delay_ms = delay_ms

    def up(self) -> None:
        """Create every namespace, link and address."""
        for name in self.ns.values():
            run(["ip", "netns", "add", name])
            # No IPv6: its link-local routes appear late and would make snapshots differ.
            run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1"])
        n = self.ns
        pairs = [("pi", "eth0", "lan", "eth0"), ("pi", "eth1", "wisp", "eth0"),
                 ("pi", "ppp0", "misp", "eth0"), ("wisp", "up0", "inet", "w0"),
                 ("misp", "up0", "inet", "m0")]
        slow = pairs[3:] if self.delay_ms else []
        for a, ai, b, bi in pairs:
            if (a, ai, b, bi) in slow:
                for argv in tun_link(n[a], ai, n[b], bi):
                    run(argv)
                continue
            run(["ip", "-n", n[a], "link", "add", ai, "type", "veth", "peer", "name", bi,
                 "netns", n[b]])
        script = {
            "lan": f"ip addr add {LAN_HOST}/24 dev eth0; ip addr add {LAN_OTHER}/24 dev eth0;"
                   "ip link set eth0 up; ip route add default via 192.168.50.1",
            "pi": f"ip addr add 192.168.50.1/24 dev eth0; ip addr add {WIRED_ADDR}/24 dev eth1;"
                  f"ip addr add {MOBILE_ADDR} peer 100.64.0.1/32 dev ppp0;"
                  "ip link set eth0 up; ip link set eth1 up; ip link set ppp0 up",
            "wisp": "ip addr add 203.0.113.1/24 dev eth0; ip addr add 10.1.0.1/30 dev up0;"
                    "ip link set eth0 up; ip link set up0 up; ip route add default via 10.1.0.2;"
                    "sysctl -qw net.ipv4.ip_forward=1",
            "misp": f"ip addr add 100.64.0.1 peer {MOBILE_ADDR}/32 dev eth0;"
                    "ip addr add 10.2.0.1/30 dev up0; ip link set eth0 up; ip link set up0 up;"
                    "ip route add default via 10.2.0.2; sysctl -qw net.ipv4.ip_forward=1",
            "inet": "ip addr add 10.1.0.2/30 dev w0; ip addr add 10.2.0.2/30 dev m0;"
                    "ip link set w0 up; ip link set m0 up; ip link set lo up;"
                    + "".join(f"ip addr add {a}/32 dev lo;"
                              for a in (*TARGETS, *EXAMPLE_TARGETS, SERVER))
                    + "ip route add 203.0.113.0/24 via 10.1.0.1;"
                    "ip route add 100.64.0.0/10 via 10.2.0.1",
        }
        for ns, cmd in script.items():
            self.sh(ns, cmd)
        for a, ai, b, bi in slow:
            p = subprocess.Popen([PY, str(HERE / "latency.py"), n[a], ai, n[b], bi,
                                  str(self.delay_ms)], text=True, stdout=subprocess.PIPE,
                                 start_new_session=True)
            self.procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        self.sh("pi", "ip link set lo up")
        # x_tables makes a namespace's tables on first use; make them now (empty), so that
        # "as before start" compares table contents, not whether anyone has looked yet.
        self.sh("pi", "for t in filter nat mangle raw security; do "
                      "iptables-legacy -t $t -S >/dev/null; done")

    def server(self, kind: str = "tcp", port: int = 8080) -> subprocess.Popen[str]:
        """peer.py in the internet namespace, once it says ready."""
        p = self.spawn("inet", [PY, str(HERE / "peer.py"), kind, SERVER, str(port)],
                       stdout=subprocess.PIPE)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        return p

    def snapshot(self, ns: str = "pi") -> dict[str, str]:
        """Rules, every routing table and the legacy iptables, without counters or dates."""
        save = self.sh(ns, "iptables-legacy-save")
        save = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in save.splitlines()
                         if not line.startswith("#"))
        return {"rule": self.sh(ns, "ip rule"), "route": self.sh(ns, "ip route show table all"),
                "iptables": save,
                "sysctl": self.sh(ns, "sysctl net.ipv4.ip_forward net.ipv4.conf.eth1.rp_filter "
                                      "net.ipv4.conf.ppp0.rp_filter")}


def topology_fixture() -> Iterator[Topology]:
    """Body of the `topo` fixture: the namespaces, removed afterwards whatever happened.
    (A module-level helper rather than a conftest, whose name would shadow tests/conftest.)"""
    yield from _topology(0)


def slow_topology_fixture() -> Iterator[Topology]:
    """Body of a fixture whose internet answers 20 ms later (10 ms each way), like a real one."""
    yield from _topology(10)


def _topology(delay_ms: float) -> Iterator[Topology]:
    t = Topology(unique_prefix(), delay_ms)
    try:
        t.up()
        yield t
    finally:
        t.down()


def unique_prefix(area: str = "net") -> str:
    """Per-run namespace prefix."""
    return f"fb-{area}-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}-"


class Part:
    """The network part running in the Pi namespace."""

    def __init__(self, topo: Topology, tmp: Path, cfg: str) -> None:
        self.tmp = tmp
        (tmp / "failberry.toml").write_text(cfg)
        self.status_file = tmp / "status.json"
        self.log = tmp / "net.log"
        with self.log.open("w") as log:
            self.proc = topo.spawn("pi", [
                PY, str(HERE / "netrun.py"), "-c", str(tmp / "failberry.toml"),
                "--state-dir", str(tmp / "state"), "--usage-file", str(tmp / "usage.json"),
                "--status-file", str(self.status_file)], stdout=log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any]:
        """The part's last status report."""
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return {}

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> float:
        """Wait until the status satisfies `pred`; the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            st = self.status()
            if st and pred(st):
                return time.monotonic() - start
            assert self.proc.poll() is None, f"network part died:\n{self.log.read_text()}"
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; status {self.status()}\n"
                             f"{self.log.read_text()[-3000:]}")

    def active(self, name: str | None, timeout: float = 15) -> float:
        """Wait for this active uplink."""
        return self.wait(lambda s: s.get("active_uplink") == name, timeout, f"active={name}")

    def stop(self) -> int:
        """SIGTERM, as systemd would; the exit status."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(15)
