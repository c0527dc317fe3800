"""Acceptance: the supervisor with the example config's probe targets, quorum and timings, in
namespaces whose internet answers 20 ms later (tests/net/latency.py), as a new user runs it.

The example's targets 1.1.1.1, 8.8.8.8 and 9.9.9.9 are test-only addresses of the topology's
"internet" namespace: nothing leaves the namespaces. The config given here names only the
interfaces, addresses, mode and paths; everything about probing is the example's (checked).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from topology import (
    EXAMPLE_TARGETS,
    MOBILE_ADDR,
    PY,
    ROOT,
    WIRED_ADDR,
    Topology,
    example_probes_config,
    slow_topology_fixture,
)

from failberry import config

pytestmark = [pytest.mark.root]

slow = pytest.fixture(slow_topology_fixture)

PORT = 9000


class Supervisor:
    """`failberry run` in the Pi namespace, as systemd starts it on the Pi."""

    def __init__(self, topo: Topology, tmp: Path, mode: str) -> None:
        self.topo = topo
        self.cfg_path = tmp / "failberry.toml"
        self.cfg_path.write_text(example_probes_config(tmp, mode))
        self.cfg = config.load(self.cfg_path)
        self.log = tmp / "supervisor.log"
        with self.log.open("w") as log:
            self.proc = topo.spawn("pi", [PY, "-m", "failberry", "run", "-c",
                                          str(self.cfg_path)],
                                   stdout=log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """One request to the health endpoint on the Pi's loopback: (code, JSON body)."""
        return self.topo.get_json("pi", PORT, path, timeout=2)

    def net(self) -> dict[str, Any]:
        """The network part's section of /status ({} until it reports)."""
        try:
            _, doc = self.get("/status")
        except (OSError, ValueError, IndexError):
            return {}
        net: dict[str, Any] = doc.get("parts", {}).get("network", {})
        return net

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> float:
        """Poll /status until `pred` holds for the network part; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.net()
            if st and pred(st):
                return time.monotonic()
            assert self.proc.poll() is None, f"supervisor died:\n{self.log.read_text()}"
            time.sleep(0.02)
        raise AssertionError(f"timed out ({timeout:g}s) waiting for {what}; network part "
                             f"{self.net()}\n{self.log.read_text()[-4000:]}")

    def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def start(slow: Topology, tmp_path: Path) -> Iterator[Callable[[str], Supervisor]]:
    sups: list[Supervisor] = []

    def go(mode: str) -> Supervisor:
        sups.append(Supervisor(slow, tmp_path, mode))
        return sups[-1]

    yield go
    for s in sups:
        if s.proc.poll() is None:
            s.stop()


def up(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: all(st.get("uplinks", {}).get(n, {}).get("up") is True for n in names)


def active(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st.get("active_uplink") == name


def seen_as(topo: Topology) -> str:
    """The address the internet server sees a new LAN connection come from."""
    with topo.inside("lan"):
        s = socket.socket()
    with s:
        s.settimeout(3)
        s.connect(("192.0.2.80", 8080))
        return s.makefile().readline().strip()


def same_probing(cfg: config.Config) -> None:
    """The config names no probe setting: they are the example's (and the defaults)."""
    example = config.load(ROOT / "examples" / "failberry.toml")
    for name in ("wired", "mobile"):
        a, b = getattr(cfg.uplink, name), getattr(example.uplink, name)
        assert (a.probe_targets, a.probe_interval, a.down, a.up, a.priority) == \
            (b.probe_targets, b.probe_interval, b.down, b.up, b.priority), name
    f, g = cfg.failover, example.failover
    assert (f.quorum, f.hold_down, f.latency_threshold, f.loss_threshold) == \
        (g.quorum, g.hold_down, g.latency_threshold, g.loss_threshold)
    assert cfg.uplink.wired.probe_targets == tuple(f"icmp:{a}" for a in EXAMPLE_TARGETS)


@pytest.mark.timeout(150)
def test_gateway_with_the_example_probes_over_a_slow_link(
        slow: Topology, start: Callable[[str], Supervisor]) -> None:
    slow.server()
    sup = start("gateway")
    same_probing(sup.cfg)
    wired = sup.cfg.uplink.wired
    hold_down = sup.cfg.failover.hold_down

    # Both uplinks pass the example's three targets within 10 s of the start.
    t_up = sup.wait(up("wired", "mobile"), 10, "both uplinks up")
    assert t_up - sup.started <= 10
    assert sup.wait(active("wired"), 1, "wired active")
    code, health = sup.get("/health")
    assert code == 200, health
    # [modem] enabled = false: no modem part, and status says why.
    assert sup.get("/status")[1]["parts"]["modem"]["state"] == "not managed"
    assert seen_as(slow) == WIRED_ADDR

    # The wired ISP stops forwarding; the cable and its carrier stay up. The bound: `down`
    # failed rounds after the fault's round, each waiting at most an interval, and a second
    # for the switch itself.
    bound = (wired.down + 1) * wired.probe_interval + 1.0
    t0 = time.monotonic()
    slow.sh("wisp", "iptables-legacy -I FORWARD -j DROP")
    t_over = sup.wait(active("mobile"), 15, "failover to mobile")
    st = sup.net()
    assert t_over - t0 <= bound, f"failover took {t_over - t0:.2f}s > {bound:.2f}s"
    assert st["uplinks"]["wired"]["up"] is False and st["uplinks"]["wired"]["carrier"] is True
    assert "failed rounds" in st["uplinks"]["wired"]["reason"]
    assert sup.get("/health")[0] == 200  # mobile carries the traffic
    assert seen_as(slow) == MOBILE_ADDR

    # The path comes back: wired is up again after `up` good rounds, but traffic moves back
    # only once it has stayed up for the hold-down.
    t1 = time.monotonic()
    slow.sh("wisp", "iptables-legacy -D FORWARD -j DROP")
    t_wired_up = sup.wait(up("wired"), wired.up * wired.probe_interval + 5, "wired up again")
    assert sup.net()["active_uplink"] == "mobile"
    t_back = sup.wait(active("wired"), hold_down + wired.up * wired.probe_interval + 10,
                      "failback to wired")
    # (/status is polled, and rendered at most every 0.25 s: half a second of slack.)
    assert t_back - t_wired_up >= hold_down - 0.5, \
        f"failback {t_back - t_wired_up:.1f}s after wired came up, hold-down {hold_down:g}s"
    assert t_back - t1 <= hold_down + wired.up * wired.probe_interval + 3
    event = sup.net()["events"][-1]
    assert event["uplink"] == "wired" and f"hold-down {hold_down:g}s" in event["reason"]
    assert seen_as(slow) == WIRED_ADDR
    assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_sidecar_with_the_example_probes_over_a_slow_link(
        slow: Topology, start: Callable[[str], Supervisor]) -> None:
    slow.server()
    sup = start("sidecar")
    same_probing(sup.cfg)
    mobile = sup.cfg.uplink.mobile
    t_up = sup.wait(up("mobile"), 10, "mobile up")
    assert t_up - sup.started <= 10
    assert sup.get("/health")[0] == 200
    assert seen_as(slow) == MOBILE_ADDR
    # The mobile ISP stops forwarding: /health says so within `down` rounds (what a DNS
    # failover checker acts on), and recovers after `up` good ones.
    t0 = time.monotonic()
    slow.sh("misp", "iptables-legacy -I FORWARD -j DROP")
    bound = (mobile.down + 1) * mobile.probe_interval + 1.0
    t_down = sup.wait(lambda st: st["uplinks"]["mobile"]["up"] is False, 20, "mobile down")
    assert t_down - t0 <= bound
    assert sup.get("/health")[0] == 503
    slow.sh("misp", "iptables-legacy -D FORWARD -j DROP")
    sup.wait(up("mobile"), (mobile.up + 1) * mobile.probe_interval + 5, "mobile up again")
    assert sup.get("/health")[0] == 200
    assert sup.stop() == 0
