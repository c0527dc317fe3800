"""A LAN client that only reads, across a failover (README, "Routing and failover"): it hears
nothing of the switch until it sends; with TCP keepalive on, its first keepalive probe after
the switch draws a reset from the Pi, so it learns within the keepalive idle time."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from topology import SERVER, WIRED_ADDR, Part, Topology, config_text, topology_fixture

pytestmark = [pytest.mark.root]

topo = pytest.fixture(topology_fixture)


def reader(topo: Topology, keepalive: bool) -> socket.socket:
    """A LAN connection to the server that has read the greeting and now only waits."""
    with topo.inside("lan"):
        s = socket.socket()
    if keepalive:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)
    s.settimeout(3)
    s.connect((SERVER, 8080))
    assert s.recv(100).decode().strip() == WIRED_ADDR
    return s


@pytest.mark.timeout(60)
def test_only_a_reader_with_keepalive_learns_of_a_switch(topo: Topology, tmp_path: Path) -> None:
    topo.server()
    part = Part(topo, tmp_path, config_text(hold_down="30s"))
    part.active("wired")
    plain, kept = reader(topo, keepalive=False), reader(topo, keepalive=True)
    topo.sh("wisp", "iptables-legacy -I FORWARD -j DROP")
    part.active("mobile", timeout=10)
    switched = time.monotonic()
    # The one with keepalive is reset within its idle time (1 s here) and a probe or two...
    kept.settimeout(5)
    with pytest.raises(ConnectionResetError):
        kept.recv(100)
    assert time.monotonic() - switched < 4
    # ...the plain reader hears nothing at all: only its own timeout would tell it.
    plain.settimeout(3)
    with pytest.raises(TimeoutError):
        plain.recv(100)
    plain.close()
    kept.close()
    assert part.stop() == 0
