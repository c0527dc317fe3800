"""The probes with real packets: bound to their uplink, each kind against a real peer."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from topology import MOBILE_ADDR, PY, SERVER, WIRED_ADDR, Topology, config_text, topology_fixture

from failberry.probes import Binding, SocketProber, parse_target

pytestmark = [pytest.mark.root]

topo = pytest.fixture(topology_fixture)

WIRED = Binding("eth1", WIRED_ADDR)
MOBILE = Binding("ppp0", MOBILE_ADDR)

DNS_SERVER = """
import socket, dns.message, dns.rcode
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.3", 53))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(4096)
    r = dns.message.make_response(dns.message.from_wire(data))
    r.set_rcode(dns.rcode.REFUSED)
    s.sendto(r.to_wire(), addr)
"""


def probe(topo: Topology, binding: Binding, targets: list[str],
          prober: SocketProber | None = None) -> dict[str, bool]:
    p = prober or SocketProber()
    with topo.inside("pi"):
        results = asyncio.run(p.round(binding, [parse_target(t) for t in targets], 1.0))
    return {r.target: r.ok for r in results}


@pytest.mark.timeout(90)
def test_every_probe_kind_through_each_uplink(topo: Topology, tmp_path: Path) -> None:
    topo.server()
    web = topo.spawn("inet", [PY, "-m", "http.server", "--bind", SERVER, "8081"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    dns = topo.spawn("inet", [PY, "-c", DNS_SERVER], stdout=subprocess.PIPE)
    assert dns.stdout is not None and dns.stdout.readline().strip() == "ready"
    (tmp_path / "failberry.toml").write_text(config_text())
    subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry.net", "apply",
                    "wired", "-c", str(tmp_path / "failberry.toml"), "--state-dir",
                    str(tmp_path / "state")], check=True, capture_output=True, timeout=60)
    for _ in range(50):  # the web server takes a moment to listen
        if probe(topo, WIRED, [f"http://{SERVER}:8081/"])[f"http://{SERVER}:8081/"]:
            break
    targets = ["icmp:192.0.2.1", f"tcp:{SERVER}:8080", "dns:192.0.2.3",
               f"http://{SERVER}:8081/", f"tcp:{SERVER}:9"]
    want = dict.fromkeys(targets, True) | {f"tcp:{SERVER}:9": False}  # nobody listens on 9
    # Root, and ping_group_range "1 0" (the default): ICMP over a raw socket.
    raw = SocketProber()
    assert probe(topo, WIRED, targets, raw) == want
    assert raw._dgram_ok is False
    assert probe(topo, MOBILE, targets) == want
    # Where ping_group_range allows it: the unprivileged datagram ICMP socket.
    topo.sh("pi", "sysctl -qw net.ipv4.ping_group_range='0 2147483647'")
    dgram = SocketProber()
    assert probe(topo, WIRED, ["icmp:192.0.2.1", "icmp:192.0.2.2"], dgram) == {
        "icmp:192.0.2.1": True, "icmp:192.0.2.2": True}
    assert dgram._dgram_ok is None  # never fell back

    # Probes are bound: when the mobile ISP drops everything, mobile probes fail even though
    # the wired path (the active default route) works.
    topo.sh("misp", "iptables-legacy -I FORWARD -j DROP")
    assert probe(topo, MOBILE, ["icmp:192.0.2.1", f"tcp:{SERVER}:8080"]) == {
        "icmp:192.0.2.1": False, f"tcp:{SERVER}:8080": False}
    assert probe(topo, WIRED, ["icmp:192.0.2.1", f"tcp:{SERVER}:8080"]) == {
        "icmp:192.0.2.1": True, f"tcp:{SERVER}:8080": True}
    web.terminate()
