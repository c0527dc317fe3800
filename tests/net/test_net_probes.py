"""The probes with real packets: bound to their uplink, each kind against a real peer."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from topology import (
    EXAMPLE_TARGETS,
    MOBILE_ADDR,
    PY,
    SERVER,
    WIRED_ADDR,
    Topology,
    config_text,
    slow_topology_fixture,
    topology_fixture,
)

from failberry.net.prober import SocketProber
from failberry.net.probes import Binding, ProbeResult, parse_target

pytestmark = [pytest.mark.root]

topo = pytest.fixture(topology_fixture)
slow = pytest.fixture(slow_topology_fixture)

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


def apply_wired(topo: Topology, tmp: Path) -> None:
    """Routes and rules as the network part makes them (each uplink's address its table)."""
    (tmp / "failberry.toml").write_text(config_text())
    subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry.net", "apply",
                    "wired", "-c", str(tmp / "failberry.toml"), "--state-dir",
                    str(tmp / "state")], check=True, capture_output=True, timeout=60)


def both_at_once(topo: Topology, prober: SocketProber, targets: list[str],
                 timeout: float = 1.0) -> dict[str, list[ProbeResult]]:
    """One round on each uplink, both in flight at once (as the network part runs them)."""
    ts = [parse_target(t) for t in targets]

    async def rounds() -> list[list[ProbeResult]]:
        return list(await asyncio.gather(prober.round(WIRED, ts, timeout),
                                         prober.round(MOBILE, ts, timeout)))

    with topo.inside("pi"):
        wired, mobile = asyncio.run(rounds())
    return {"wired": wired, "mobile": mobile}


def oks(results: dict[str, list[ProbeResult]]) -> dict[str, dict[str, bool]]:
    return {up: {r.target: r.ok for r in rs} for up, rs in results.items()}


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


ICMP_EXAMPLE = [f"icmp:{a}" for a in EXAMPLE_TARGETS]


@pytest.mark.timeout(90)
def test_concurrent_icmp_probes_over_a_slow_link_each_take_their_own_reply(
        slow: Topology, tmp_path: Path) -> None:
    # The example config's three ICMP targets on both uplinks at once, over an internet that
    # answers 20 ms later: six probes in flight before the first reply. (Matching replies with
    # the last sequence number sent passed only the very last probe of all.)
    apply_wired(slow, tmp_path)
    want = {up: dict.fromkeys(ICMP_EXAMPLE, True) for up in ("wired", "mobile")}
    raw = SocketProber()  # root, ping_group_range "1 0": raw sockets
    for _ in range(3):
        results = both_at_once(slow, raw, ICMP_EXAMPLE)
        assert oks(results) == want
        assert all(r.latency is not None and r.latency >= 0.018
                   for rs in results.values() for r in rs)  # the link really is slow
    assert raw._dgram_ok is False
    slow.sh("pi", "sysctl -qw net.ipv4.ping_group_range='0 2147483647'")
    dgram = SocketProber()  # the unprivileged datagram socket
    for _ in range(3):
        assert oks(both_at_once(slow, dgram, ICMP_EXAMPLE)) == want
    assert dgram._dgram_ok is None

    # Still bound to their uplink when both are in flight: the mobile ISP drops everything, so
    # only the mobile probes fail, on both kinds of socket.
    slow.sh("misp", "iptables-legacy -I FORWARD -j DROP")
    down = want | {"mobile": dict.fromkeys(ICMP_EXAMPLE, False)}
    assert oks(both_at_once(slow, dgram, ICMP_EXAMPLE, 0.5)) == down
    slow.sh("pi", "sysctl -qw net.ipv4.ping_group_range='1 0'")
    assert oks(both_at_once(slow, SocketProber(), ICMP_EXAMPLE, 0.5)) == down


@pytest.mark.timeout(90)
def test_every_probe_kind_in_flight_at_once_over_a_slow_link(
        slow: Topology, tmp_path: Path) -> None:
    slow.server()
    slow.server(port=8443)
    web = slow.spawn("inet", [PY, "-m", "http.server", "--bind", SERVER, "8081"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    dns = slow.spawn("inet", [PY, "-c", DNS_SERVER], stdout=subprocess.PIPE)
    assert dns.stdout is not None and dns.stdout.readline().strip() == "ready"
    apply_wired(slow, tmp_path)
    for _ in range(50):  # the web server takes a moment to listen
        if probe(slow, WIRED, [f"http://{SERVER}:8081/"])[f"http://{SERVER}:8081/"]:
            break
    targets = [*ICMP_EXAMPLE, "icmp:192.0.2.1", f"tcp:{SERVER}:8080", f"tcp:{SERVER}:8443",
               "dns:192.0.2.3", f"http://{SERVER}:8081/", f"tcp:{SERVER}:9"]
    want = dict.fromkeys(targets, True) | {f"tcp:{SERVER}:9": False}  # nobody listens on 9
    prober = SocketProber()
    for _ in range(3):
        results = both_at_once(slow, prober, targets)
        assert oks(results) == {"wired": want, "mobile": want}
    web.terminate()
