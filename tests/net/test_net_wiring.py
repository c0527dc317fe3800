"""The network part's wiring to the rest, with real packets between namespaces: a forced
failover from the bus (`ForceUplink`, the alerts part's SMS command) moves the default route
and expires; the health endpoint's traffic over the mobile link is counted apart."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from topology import (
    HERE,
    LAN_HOST,
    MOBILE_ADDR,
    PY,
    SERVER,
    WIRED_ADDR,
    Part,
    Topology,
    config_text,
    topology_fixture,
)

pytestmark = [pytest.mark.root]

topo = pytest.fixture(topology_fixture)

PATHS = '\n[paths]\nrun_dir = "{tmp}/run"\nstate_dir = "{tmp}/state"\n'


class Forcing(Part):
    """tests/net/forcing.py (the supervisor, the network part, a bus console) in the Pi
    namespace; `force()` publishes a `ForceUplink` on its bus."""

    def __init__(self, topo: Topology, tmp: Path, cfg: str) -> None:
        self.tmp = tmp
        (tmp / "failberry.toml").write_text(cfg + PATHS.format(tmp=tmp))
        self.status_file = tmp / "status.json"
        self.log = tmp / "net.log"
        with self.log.open("w") as log:
            self.proc = topo.spawn("pi", [PY, str(HERE / "forcing.py"),
                                          str(tmp / "failberry.toml"), str(self.status_file)],
                                   stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)

    def force(self, uplink: str | None, seconds: float, reason: str) -> None:
        """Publish ForceUplink(uplink, seconds, reason) on the supervisor's bus."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{uplink or 'none'} {seconds} {reason}\n")
        self.proc.stdin.flush()


@pytest.fixture
def forcing(topo: Topology, tmp_path: Path) -> Iterator[Forcing]:
    part = Forcing(topo, tmp_path, config_text(hold_down="1s"))
    try:
        yield part
    finally:
        if part.proc.poll() is None:
            part.stop()


def default_dev(topo: Topology) -> str:
    """The device table 2000's default route names."""
    out = topo.sh("pi", "ip route show table 2000").split()
    return out[out.index("dev") + 1] if "dev" in out else ""


def seen_as(topo: Topology) -> str:
    """The address the internet server sees a new LAN connection come from."""
    with topo.inside("lan"):
        s = socket.socket()
    with s:
        s.settimeout(3)
        s.bind((LAN_HOST, 0))
        s.connect((SERVER, 8080))
        return s.makefile().readline().strip()


def both_up(st: dict[str, object]) -> bool:
    ups = st.get("uplinks", {})
    assert isinstance(ups, dict)
    return len(ups) == 2 and all(u.get("up") is True for u in ups.values())


@pytest.mark.timeout(90)
def test_a_forced_failover_moves_the_default_route_and_expires(topo: Topology,
                                                               forcing: Forcing) -> None:
    topo.server()
    forcing.active("wired", timeout=20)
    forcing.wait(both_up, 15, "both uplinks up")
    time.sleep(1.5)  # past the hold-down: nothing but the force would leave wired
    assert default_dev(topo) == "eth1" and seen_as(topo) == WIRED_ADDR

    sent = time.monotonic()
    forcing.force("mobile", 4, "SMS failover from +4917012345678")
    took = forcing.active("mobile", timeout=3)
    assert default_dev(topo) == "ppp0"
    assert seen_as(topo) == MOBILE_ADDR  # the LAN really leaves through mobile
    st = forcing.status()
    assert st["forced"]["uplink"] == "mobile"
    assert 0 < st["forced"]["remaining_s"] <= 4
    assert st["bus_changes"][-1] == {
        "uplink": "mobile", "previous": "wired",
        "reason": st["events"][-1]["reason"]}
    assert "mobile forced for 4s: SMS failover from +4917012345678" in \
        st["bus_changes"][-1]["reason"]
    assert st["uplinks"]["wired"]["up"] is True  # healthy, and still not used: the force

    forcing.active("wired", timeout=8)
    held = time.monotonic() - sent
    assert 3.5 < held < 7.5, held  # held for its 4 s, then at once (not at a 5 s check)
    assert default_dev(topo) == "eth1" and seen_as(topo) == WIRED_ADDR
    st = forcing.status()
    assert st.get("forced") is None
    assert st["bus_changes"][-1]["previous"] == "mobile"
    assert st["bus_changes"][-1]["reason"].startswith("force of mobile over; ")
    print(f"force to mobile route in {took:.3f}s; back to wired {held:.3f}s after the force")

    # A force of an uplink without a link is ignored (logged), and the route stays.
    topo.sh("pi", "ip link set ppp0 down")
    forcing.wait(lambda s: s["uplinks"]["mobile"]["link"] is False, 5, "ppp0 down")
    forcing.force("mobile", 30, "SMS failover again")
    forcing.wait(lambda s: "ignoring the force of mobile" in forcing.log.read_text(), 5,
                 "the ignored force logged")
    assert forcing.status()["active_uplink"] == "wired" and forcing.status().get("forced") is None
    assert default_dev(topo) == "eth1"
    assert forcing.stop() == 0


HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def poll_health(topo: Topology, address: str, n: int) -> int:
    """`n` HTTP requests for /health from the internet, each on its own connection, as a DNS
    failover service's checkers make them; the HTTP bytes both ways."""
    total = 0
    for _ in range(n):
        with topo.inside("inet"):
            s = socket.socket()
        with s:
            s.settimeout(3)
            s.connect((address, 9000))
            s.sendall(HEALTH_REQUEST)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 "), answer[:100]
        assert b"\r\n\r\n" in answer
        total += len(HEALTH_REQUEST) + len(answer)
    return total


def mobile_isp_bytes(topo: Topology) -> int:
    """What the mobile ISP's side of the link carried for the health port (its own rules)."""
    out = topo.sh("misp", "iptables-legacy -L FORWARD -nvx")
    return sum(int(line.split()[1]) for line in out.splitlines()
               if line.rstrip().endswith(("tcp dpt:9000", "tcp spt:9000")))


@pytest.mark.timeout(90)
def test_health_checks_over_the_mobile_link_are_counted_apart(topo: Topology,
                                                              forcing: Forcing) -> None:
    # An independent count at the other end of the mobile link: the same IP packets.
    topo.sh("misp", "iptables-legacy -A FORWARD -o eth0 -p tcp --dport 9000;"
                    "iptables-legacy -A FORWARD -i eth0 -p tcp --sport 9000")
    forcing.active("wired", timeout=20)
    forcing.wait(both_up, 15, "both uplinks up")
    assert forcing.status()["health_check_bytes"] == 0

    http = poll_health(topo, MOBILE_ADDR, 20)
    poll_health(topo, WIRED_ADDR, 10)  # free: not the metered link
    isp = mobile_isp_bytes(topo)
    assert isp > http  # HTTP plus TCP/IP headers, handshakes and closes
    # The part samples its counters at each reconcile (every 5 s).
    forcing.wait(lambda s: s["health_check_bytes"] == isp, 15,
                 f"health_check_bytes == {isp}")
    st = forcing.status()
    assert st["data"]["devices"] == {LAN_HOST: 0}  # no LAN device used any of it
    print(f"20 health checks: {http} HTTP bytes, {isp} bytes on the link, counted exactly")

    # A clean stop persists it with the period's usage; the next run counts on from there.
    assert forcing.stop() == 0
    saved = (forcing.tmp / "state" / "usage.json").read_text()
    assert f'"health-checks": {isp}' in saved
