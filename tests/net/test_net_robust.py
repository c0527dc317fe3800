"""The network part survives what the field does to it: netlink errors are retried, never fatal;
a part that crashes anyway leaves the firewall closed and is rebuilt fresh by the supervisor;
an interface the config names that does not exist is an error in the log, /status and /health.
Real supervisor, real routes and iptables, real packets, in namespaces."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from supervised import RESTART_AFTER
from test_net_failover import (
    DROP_ALL,
    assert_stopped_closed,
    both_up,
    net_clean,
    open_ports,
    seen_as,
)
from topology import HERE, MOBILE_ADDR, PY, ROOT, WIRED_ADDR, Part, Topology, config_text
from topology import topology_fixture as _topology_fixture

pytestmark = [pytest.mark.root]

topo = pytest.fixture(_topology_fixture)

HEALTH_PORT = 9000


class Supervised:
    """tests/net/supervised.py (the real supervisor, network part only) in the Pi namespace."""

    def __init__(self, topo: Topology, tmp: Path, cfg: str, crash: bool = False) -> None:
        self.topo = topo
        (tmp / "failberry.toml").write_text(cfg)
        self.state_dir = tmp / "state"
        self.crash_file = tmp / "crash"
        self.log = tmp / "supervisor.log"
        argv = [PY, str(HERE / "supervised.py"), str(tmp / "failberry.toml"), str(HEALTH_PORT),
                str(self.state_dir)]
        if crash:
            argv.append(str(self.crash_file))
        with self.log.open("w") as log:
            self.proc = topo.spawn("pi", argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """One request to the health endpoint on the Pi's loopback: (code, JSON body)."""
        return self.topo.get_json("pi", HEALTH_PORT, path, timeout=3)

    def status(self) -> dict[str, Any]:
        """/status, or {} while the server is not up yet."""
        try:
            return self.get("/status")[1]
        except OSError:
            return {}

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> None:
        """Until /status satisfies `pred`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.status()
            if st and pred(st):
                return
            assert self.proc.poll() is None, f"supervisor died:\n{self.log.read_text()}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; status {self.status()}\n"
                             f"{self.log.read_text()[-4000:]}")

    def wait_log(self, text: str, timeout: float) -> None:
        """Until the log holds `text`."""
        end = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert time.monotonic() < end, f"no {text!r} in\n{self.log.read_text()[-4000:]}"
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(15)


def net(st: dict[str, Any]) -> dict[str, Any]:
    """The network part's report in a /status document."""
    report: dict[str, Any] = st.get("parts", {}).get("network", {})
    return report


def chains(topo: Topology) -> str:
    """The Pi's filter table."""
    return topo.sh("pi", "iptables-legacy -S")


@pytest.mark.timeout(120)
def test_a_crashed_part_leaves_the_uplinks_closed_and_is_rebuilt_fresh(
        topo: Topology, tmp_path: Path) -> None:
    topo.server()
    before = topo.snapshot()
    with topo.inside("pi"):
        listener = socket.create_server(("0.0.0.0", 8081))  # a service on the Pi, LAN only
    sup = Supervised(topo, tmp_path, config_text(), crash=True)
    try:
        sup.wait(lambda st: net(st).get("active_uplink") == "wired" and both_up(net(st)), 20,
                 "wired active, both uplinks up")
        assert open_ports(topo, "wisp", WIRED_ADDR, [8081]) == set()

        sup.crash_file.touch()  # the next probe round raises: a bug in the part
        sup.wait_log("part network crashed: RuntimeError: injected crash", 10)
        crashed = time.monotonic()
        # The supervisor waits before it builds a new part. Meanwhile the uplinks stay closed,
        # and the LAN keeps its route and NAT (nothing was removed).
        assert "-A INPUT -j fb-input" in chains(topo)
        assert open_ports(topo, "wisp", WIRED_ADDR, [8081]) == set()
        assert seen_as(topo) == WIRED_ADDR
        assert time.monotonic() - crashed < RESTART_AFTER, "checked after the restart"

        # A fresh part takes over from what the crashed one left, and keeps running.
        time.sleep(max(0.0, crashed + RESTART_AFTER - time.monotonic()))
        sup.wait(lambda st: st["restarts"].get("network") == 1 and net(st)["age_s"] < 0.5
                 and net(st).get("state") == "ok" and net(st).get("active_uplink") == "wired",
                 15, "the rebuilt part reporting")
        time.sleep(1.0)
        st = sup.status()
        assert st["restarts"]["network"] == 1 and not net(st)["stale"], st
        log = sup.log.read_text()
        assert log.count("part network crashed") == 1, log
        assert "after shutdown" not in log
        assert seen_as(topo) == WIRED_ADDR
        assert open_ports(topo, "misp", MOBILE_ADDR, [8081]) == set()
    finally:
        rc = sup.stop()
        listener.close()
    assert rc == 0
    assert_stopped_closed(topo, before)
    net_clean(topo, sup.state_dir)
    assert topo.snapshot() == before


@pytest.mark.timeout(120)
def test_a_part_started_after_a_crash_keeps_the_active_uplink(topo: Topology,
                                                             tmp_path: Path) -> None:
    topo.server()
    topo.sh("wisp", DROP_ALL)  # the wired path is dead: the traffic is on mobile
    part = Part(topo, tmp_path, config_text())
    part.active("mobile", timeout=15)
    os.killpg(part.proc.pid, signal.SIGKILL)  # dies: the kernel keeps its routes and chains
    part.proc.wait(10)
    part.status_file.unlink()
    part = Part(topo, tmp_path, config_text())
    part.wait(lambda st: st.get("uplinks", {}).get("mobile", {}).get("up") is True
              and st["uplinks"]["wired"]["up"] is False, 15, "verdicts for both uplinks")
    # The new part took over the mobile route instead of trying the dead wired path first.
    assert "taking over from a previous run: mobile (ppp0)" in part.log.read_text()
    st = part.status()
    assert st["active_uplink"] == "mobile" and st["events"] == [], st
    assert seen_as(topo) == MOBILE_ADDR
    assert part.stop() == 0


@pytest.mark.timeout(120)
def test_a_gateway_gone_off_link_is_retried_not_fatal(topo: Topology, tmp_path: Path) -> None:
    topo.server()
    part = Part(topo, tmp_path, config_text(hold_down="0s"))
    part.active("wired")
    part.wait(both_up, 15, "both uplinks up")
    # The wired link is renumbered: the configured gateway 203.0.113.1 is not on-link any more,
    # so the kernel refuses the route through it ("Network is unreachable").
    topo.sh("pi", "ip addr flush dev eth1; ip addr add 198.51.100.2/24 dev eth1")
    part.wait(lambda st: "Network is unreachable" in (st.get("apply_error") or ""), 10,
              "the failed apply in the status")
    part.active("mobile", timeout=10)
    assert seen_as(topo) == MOBILE_ADDR
    time.sleep(2.0)  # a few retries
    assert part.proc.poll() is None
    assert re.search(r"could not apply the network plan \(.*\): .*Network is unreachable.*; "
                     r"retrying in", part.log.read_text())
    save = chains(topo)
    assert "-A INPUT -j fb-input" in save
    # The route through the uplink it left is gone, so the LAN may not leave through it.
    assert "-A fb-forward -i eth0 -o eth1 -j REJECT" in save

    topo.sh("pi", f"ip addr flush dev eth1; ip addr add {WIRED_ADDR}/24 dev eth1")
    part.wait(lambda st: st.get("apply_error") is None and st.get("active_uplink") == "wired",
              20, "applied again, back on wired")
    assert "network plan applied after" in part.log.read_text()
    assert seen_as(topo) == WIRED_ADDR
    assert part.stop() == 0


@pytest.mark.timeout(120)
def test_a_flapping_mobile_link_is_not_fatal(topo: Topology, tmp_path: Path) -> None:
    topo.server()
    part = Part(topo, tmp_path, config_text(hold_down="0s"))
    part.active("wired")
    part.wait(both_up, 15, "both uplinks up")
    topo.sh("wisp", DROP_ALL)  # the mobile link carries the traffic: its route is the switch
    part.active("mobile", timeout=10)
    for i in range(8):
        topo.sh("pi", f"ip link set ppp0 down; sleep 0.0{i % 5}; ip link set ppp0 up")
        time.sleep(0.05 * (i % 3))
    assert part.proc.poll() is None, part.log.read_text()
    part.wait(lambda st: st["uplinks"]["mobile"]["up"] is True and st.get("apply_error") is None
              and st.get("active_uplink") == "mobile", 20, "mobile up and applied")
    assert seen_as(topo) == MOBILE_ADDR
    assert part.stop() == 0


@pytest.mark.timeout(120)
def test_missing_interfaces_are_errors_in_log_status_and_health(topo: Topology,
                                                               tmp_path: Path) -> None:
    topo.server()
    cfg = (config_text().replace('interface = "eth1"', 'interface = "wan9"')
           .replace('interface = "eth0"', 'interface = "eth9"'))
    lan_err = "lan.interface: interface eth9 does not exist"
    wired_err = "uplink.wired.interface: interface wan9 does not exist"
    sup = Supervised(topo, tmp_path, cfg)
    try:
        sup.wait(lambda st: net(st).get("uplinks", {}).get("mobile", {}).get("up") is True, 20,
                 "mobile up")
        code, body = sup.get("/health")
        assert code == 503, body
        assert lan_err in body["reason"] and wired_err in body["reason"], body
        st = sup.status()
        assert net(st)["errors"] == [lan_err, wired_err]
        assert st["uplinks"]["wired"]["reason"] == "wan9 does not exist"
        log = sup.log.read_text()
        for err in (lan_err, wired_err):
            lines = [line for line in log.splitlines() if err in line]
            assert len(lines) == 1 and " ERROR " in lines[0], log

        # The LAN adapter shows up late (USB): its error goes, the wired one stays.
        topo.sh("pi", "ip link add eth9 type veth peer name eth9p")
        sup.wait(lambda st: net(st).get("errors") == [wired_err], 10, "only the wired error")
        assert "lan.interface: interface eth9 is there now" in sup.log.read_text()
        topo.sh("pi", "ip link add wan9 type veth peer name wan9p")
        sup.wait(lambda st: net(st).get("errors") == [], 10, "no errors")
        code, body = sup.get("/health")
        assert code == 200, body
    finally:
        assert sup.stop() == 0
