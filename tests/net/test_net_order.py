"""The order of an apply, seen from outside with real packets: no LAN packet leaves with its
private source (NAT and the filter exist before any route sends LAN traffic out), at start and
at every kind of restart; and a connected UDP socket on the LAN never sees ECONNREFUSED across
a switch (no packet meets the old uplink's REJECT)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_net_failover import both_up
from topology import LAN_HOST, MOBILE_ADDR, PY, SERVER, WIRED_ADDR, Part, Topology, config_text
from topology import topology_fixture as _topology_fixture

pytestmark = [pytest.mark.root]

topo = pytest.fixture(_topology_fixture)

UDP_PORT = 9999
LAN_PORT = 40000  # the LAN flow's fixed source port

SINK = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{SERVER}", {UDP_PORT}))
while True:
    s.recv(2048)
"""

SENDER = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{LAN_HOST}", {LAN_PORT}))
while True:
    try:
        s.sendto(b"x" * 32, ("{SERVER}", {UDP_PORT}))
    except OSError:
        pass
    time.sleep(0.0005)
"""


def count_rules(topo: Topology) -> None:
    """Counting rules where each ISP receives what the Pi sends: LAN sources, and each
    uplink's address (the flow NATed)."""
    for ns in ("wisp", "misp"):
        topo.sh(ns, "iptables-legacy -t raw -A PREROUTING -i eth0 -s 192.168.0.0/16;"
                    f"iptables-legacy -t raw -A PREROUTING -i eth0 -s {WIRED_ADDR} -p udp "
                    f"--dport {UDP_PORT};"
                    f"iptables-legacy -t raw -A PREROUTING -i eth0 -s {MOBILE_ADDR} -p udp "
                    f"--dport {UDP_PORT}")


def counts(topo: Topology) -> dict[str, int]:
    """Packets each ISP received: `private`, and the flow from `wired`/`mobile` addresses."""
    out = {"private": 0, "wired": 0, "mobile": 0}
    for ns in ("wisp", "misp"):
        text = topo.sh(ns, "iptables-legacy -t raw -L PREROUTING -v -x -n")
        for line in text.splitlines()[2:]:  # pkts bytes prot opt in out source destination
            f = line.split()
            pkts, src = int(f[0]), f[6]
            key = {"192.168.0.0/16": "private", WIRED_ADDR: "wired", MOBILE_ADDR: "mobile"}[src]
            out[key] += pkts
    return out


def wait_count(topo: Topology, key: str, more_than: int, timeout: float = 10) -> None:
    """Until the ISPs received more than `more_than` packets of the flow from `key`."""
    end = time.monotonic() + timeout
    while counts(topo)[key] <= more_than:
        assert time.monotonic() < end, f"flow not seen from {key}: {counts(topo)}"
        time.sleep(0.05)


@pytest.fixture
def lan_flow(topo: Topology) -> Iterator[None]:
    """A LAN host sending UDP from a fixed port every 0.5 ms to a sink on the internet."""
    count_rules(topo)
    topo.spawn("inet", [PY, "-c", SINK])
    topo.spawn("lan", [PY, "-c", SENDER])
    yield


@pytest.mark.timeout(180)
def test_a_running_lan_flow_never_leaves_without_nat(topo: Topology, tmp_path: Path,
                                                     lan_flow: None) -> None:
    time.sleep(0.5)  # the flow runs before failberry starts (the Pi does not forward yet)
    assert counts(topo) == {"private": 0, "wired": 0, "mobile": 0}
    cfg = config_text(wired_targets='["icmp:192.0.2.1", "icmp:192.0.2.2", "icmp:192.0.2.3"]')

    part = Part(topo, tmp_path, cfg)
    part.active("wired")
    wait_count(topo, "wired", 200)
    assert counts(topo)["private"] == 0, "LAN packets left un-NATed at start"

    # A crash (the process dies: nothing is cleaned up), then a new part.
    os.killpg(part.proc.pid, signal.SIGKILL)
    part.proc.wait(10)
    seen = counts(topo)["wired"]
    part.status_file.unlink()
    part = Part(topo, tmp_path, cfg)
    part.active("wired")
    part.wait(both_up, 15, "both uplinks up")
    wait_count(topo, "wired", seen + 200)
    assert counts(topo)["private"] == 0, "LAN packets left un-NATed after a crash restart"

    # A clean stop (the flow stops being forwarded), then a start.
    assert part.stop() == 0
    time.sleep(0.3)
    seen = counts(topo)["wired"]
    part.status_file.unlink()
    part = Part(topo, tmp_path, cfg)
    part.active("wired")
    wait_count(topo, "wired", seen + 200)
    assert counts(topo)["private"] == 0, "LAN packets left un-NATed after a restart"
    assert part.stop() == 0


class ConnectedUdp:
    """A LAN host's connected UDP socket sending every 1 ms; records every send error."""

    def __init__(self, topo: Topology) -> None:
        with topo.inside("lan"):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LAN_HOST, LAN_PORT + 1))
        self.sock.connect((SERVER, UDP_PORT))
        self.errors: list[int] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.send(b"y" * 32)
                self.sent += 1
            except OSError as e:
                self.errors.append(e.errno or 0)
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.timeout(120)
def test_a_connected_udp_socket_sees_no_refusal_across_switches(topo: Topology, tmp_path: Path,
                                                                lan_flow: None) -> None:
    part = Part(topo, tmp_path, config_text(
        wired_targets='["icmp:192.0.2.1", "icmp:192.0.2.2", "icmp:192.0.2.3"]', hold_down="0s"))
    part.active("wired")
    part.wait(both_up, 15, "both uplinks up")
    udp = ConnectedUdp(topo)
    try:
        time.sleep(0.3)
        for _ in range(3):
            topo.sh("wisp", "ip link set eth0 down")  # carrier lost: over to mobile
            part.active("mobile", timeout=5)
            seen = counts(topo)["mobile"]
            wait_count(topo, "mobile", seen + 100)
            topo.sh("wisp", "ip link set eth0 up")  # and back once wired passes its probes
            part.active("wired", timeout=15)
            seen = counts(topo)["wired"]
            wait_count(topo, "wired", seen + 100)
    finally:
        udp.stop()
    assert udp.sent > 1000
    refused = udp.errors.count(errno.ECONNREFUSED)
    assert refused == 0, f"{refused} sends refused (errors {sorted(set(udp.errors))})"
    assert part.stop() == 0
