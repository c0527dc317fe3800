"""Routing, NAT, firewall and failover with real packets between namespaces."""

from __future__ import annotations

import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from topology import (
    LAN_HOST,
    LAN_OTHER,
    MOBILE_ADDR,
    PY,
    ROOT,
    SERVER,
    WIRED_ADDR,
    Part,
    Topology,
    config_text,
    topology_fixture,
)

pytestmark = [pytest.mark.root]

topo = pytest.fixture(topology_fixture)


@pytest.fixture
def start_part(topo: Topology, tmp_path: Path) -> Callable[[str], Part]:
    """Start the network part in the Pi namespace with a config text."""
    def start(cfg: str) -> Part:
        return Part(topo, tmp_path, cfg)
    return start


DROP_ALL = "iptables-legacy -I FORWARD -j DROP"
UNDROP_ALL = "iptables-legacy -D FORWARD -j DROP"


def connect(topo: Topology, ns: str, bind: str | None = None,
            timeout: float = 3) -> socket.socket:
    """A TCP connection to the internet server from a namespace."""
    with topo.inside(ns):
        s = socket.socket()
    s.settimeout(timeout)
    if bind:
        s.bind((bind, 0))
    s.connect((SERVER, 8080))
    return s


def seen_as(topo: Topology, ns: str = "lan", bind: str | None = None) -> str:
    """The address the server sees a fresh connection come from."""
    with connect(topo, ns, bind) as s:
        return s.makefile().readline().strip()


def echo(s: socket.socket, text: str) -> str:
    s.sendall(text.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            raise ConnectionResetError("closed")
        data += chunk
    return data.decode().strip()


def both_up(st: dict[str, object]) -> bool:
    ups = st.get("uplinks", {})
    assert isinstance(ups, dict)
    return all(u.get("up") is True for u in ups.values())


@pytest.mark.timeout(120)
def test_nat_failover_conntrack_allowlist_failback_and_clean(
        topo: Topology, start_part: Callable[[str], Part]) -> None:
    topo.server()
    before = topo.snapshot()
    part = start_part(config_text(hold_down="2s"))
    part.active("wired")
    part.wait(both_up, 15, "both uplinks up")
    assert seen_as(topo) == WIRED_ADDR
    # Each uplink's next hop and byte counters are reported (they were always null).
    part.wait(lambda st: (st["uplinks"]["wired"].get("tx_bytes") or 0) > 0, 12, "byte counters")
    ups = part.status()["uplinks"]
    assert ups["wired"]["gateway"] == "203.0.113.1" and ups["wired"]["rx_bytes"] > 0
    assert ups["mobile"]["tx_bytes"] > 0

    lan_flow = connect(topo, "lan")
    assert lan_flow.makefile().readline().strip() == WIRED_ADDR
    pi_flow = connect(topo, "pi", bind=MOBILE_ADDR)  # the Pi's own flow on the mobile uplink
    pi_file = pi_flow.makefile()
    assert pi_file.readline().strip() == MOBILE_ADDR
    assert echo(lan_flow, "before") == "before"

    # The wired ISP's upstream starts dropping everything; the wired link itself stays up.
    topo.sh("wisp", DROP_ALL)
    part.active("mobile", timeout=10)
    st = part.status()
    assert st["uplinks"]["wired"]["up"] is False
    assert st["uplinks"]["wired"]["link"] is True
    assert "failed rounds" in st["uplinks"]["wired"]["reason"]
    assert st["events"][-1]["previous"] == "wired"
    assert "wired fails its probes" in st["events"][-1]["reason"]

    # The flow NATed through the failed uplink is reset at its next packet...
    lan_flow.settimeout(2)
    with pytest.raises((ConnectionResetError, ConnectionRefusedError)):
        echo(lan_flow, "after")
    lan_flow.close()
    # ...while the one on the surviving uplink carries on.
    pi_flow.sendall(b"still here\n")
    assert pi_file.readline().strip() == "still here"
    pi_flow.close()

    # New connections leave through mobile; a device not on the allowlist may not.
    assert seen_as(topo) == MOBILE_ADDR
    assert seen_as(topo, bind=LAN_HOST) == MOBILE_ADDR
    with pytest.raises(ConnectionRefusedError):
        seen_as(topo, bind=LAN_OTHER)
    # Counted from the allowlist rule's counters at the next periodic check.
    part.wait(lambda st: st["data"]["devices"].get(LAN_HOST, 0) > 0, 12, "bytes counted")

    # The wired path comes back and stays good: after the hold-down, traffic moves back.
    topo.sh("wisp", UNDROP_ALL)
    part.active("wired", timeout=20)
    assert "hold-down 2s" in part.status()["events"][-1]["reason"]
    assert seen_as(topo) == WIRED_ADDR
    assert seen_as(topo, bind=LAN_OTHER) == WIRED_ADDR  # the allowlist is for mobile only

    assert part.stop() == 0
    assert_stopped_closed(topo, before)
    net_clean(topo, part.tmp / "state")
    assert topo.snapshot() == before


def assert_stopped_closed(topo: Topology, before: dict[str, str]) -> None:
    """What a clean stop leaves: routes, rules, sysctls and NAT as before start, and the filter
    chains, letting no LAN traffic out to an uplink and closing the uplinks."""
    after = topo.snapshot()
    assert {k: v for k, v in after.items() if k != "iptables"} == \
        {k: v for k, v in before.items() if k != "iptables"}
    save = after["iptables"]
    nat = save.split("*nat", 1)[1].split("COMMIT", 1)[0]
    assert "fb-" not in nat
    assert "-A INPUT -j fb-input" in save and "-A FORWARD -j fb-forward" in save
    for dev in ("eth1", "ppp0"):
        assert f"-A fb-forward -i eth0 -o {dev} -j REJECT" in save
        assert f"-A fb-input -i {dev} -j DROP" in save
    assert "-A fb-forward -i eth0 -o eth1 -j ACCEPT" not in save


def net_clean(topo: Topology, state_dir: Path) -> None:
    """`failberry net clean` in the Pi namespace."""
    out = subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry", "net",
                          "clean", "--state-dir", str(state_dir)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr


@pytest.mark.timeout(60)
def test_carrier_loss_fails_over_and_back(
        topo: Topology, start_part: Callable[[str], Part]) -> None:
    topo.server()
    part = start_part(config_text(hold_down="0s"))
    part.active("wired")
    part.wait(both_up, 15, "both uplinks up")
    topo.sh("wisp", "ip link set eth0 down")
    part.active("mobile", timeout=5)
    wired = part.status()["uplinks"]["wired"]
    assert wired["carrier"] is False and wired["reason"] == "eth1 has no carrier"
    assert seen_as(topo) == MOBILE_ADDR
    topo.sh("wisp", "ip link set eth0 up")
    part.active("wired", timeout=15)
    assert seen_as(topo) == WIRED_ADDR
    assert part.stop() == 0


@pytest.mark.timeout(90)
def test_loss_injected_with_statistic_trips_the_loss_threshold(
        topo: Topology, start_part: Callable[[str], Part]) -> None:
    topo.server()
    # quorum 3: a round fails on its targets only when all three are lost.
    part = start_part(config_text(
        wired_targets='["icmp:192.0.2.1", "icmp:192.0.2.2", "icmp:192.0.2.3"]',
        quorum=3, loss=20))
    part.active("wired")
    part.wait(both_up, 15, "both uplinks up")
    # Every third packet from the Pi towards the internet vanishes at the wired ISP: 33% loss,
    # and never three in a row, so only the loss threshold can take the uplink down. (Random
    # 30% loss lost all three of a round now and then, and the reason named the targets.)
    topo.sh("wisp", "iptables-legacy -I FORWARD -i eth0 -m statistic --mode nth --every 3 "
                    "--packet 0 -j DROP")
    part.active("mobile", timeout=60)
    wired = part.status()["uplinks"]["wired"]
    assert wired["up"] is False
    assert "loss" in wired["reason"]
    assert wired["loss_pct"] > 20
    assert part.stop() == 0


def open_ports(topo: Topology, ns: str, address: str, ports: Iterable[int]) -> set[int]:
    """Connect scan from a namespace: the ports that accepted within a second."""
    found: set[int] = set()
    todo = list(ports)
    for i in range(0, len(todo), 256):
        socks = {}
        for port in todo[i:i + 256]:
            with topo.inside(ns):
                s = socket.socket()
            s.setblocking(False)
            s.connect_ex((address, port))
            socks[s] = port
        deadline = time.monotonic() + 1.0
        pending = set(socks)
        while pending and time.monotonic() < deadline:
            _, ready, _ = select.select([], list(pending), [], deadline - time.monotonic())
            for s in ready:
                pending.discard(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    found.add(socks[s])
        for s in socks:
            s.close()
    return found


@pytest.mark.timeout(90)
def test_uplink_side_reaches_only_opened_ports(
        topo: Topology, start_part: Callable[[str], Part]) -> None:
    topo.server()
    listeners = []
    for port in (22, 8081, 9000):
        with topo.inside("pi"):
            s = socket.create_server(("0.0.0.0", port), backlog=1024)
        listeners.append(s)
    part = start_part(config_text())
    part.active("wired")
    ports = [*range(1, 1025), 8081, 9000]
    # The LAN side reaches every listener (nothing there is failberry's to close)...
    assert open_ports(topo, "lan", "192.168.50.1", ports) == {22, 8081, 9000}
    # ...the ISPs only the port the config opened.
    assert open_ports(topo, "wisp", WIRED_ADDR, ports) == {9000}
    assert open_ports(topo, "misp", MOBILE_ADDR, ports) == {9000}
    assert part.stop() == 0
    for s in listeners:
        s.close()
