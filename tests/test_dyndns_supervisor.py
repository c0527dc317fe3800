"""Dynamic DNS through the production path: `failberry run` in a network namespace, its own
netlink monitor and network part, BIND on the namespace's loopback, real addresses added with
`ip`. Also the seams it shares with other instances ([paths]) and `[modem] enabled = false`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import typed_status
from conftest import free_port
from dyndns_bind import ZONE
from dyndns_ns import MOBILE, MOBILE6, PY, WIRED, WIRED6, PiNs, sh, unique_prefix, wait_for
from failberry.reports import DyndnsReport, NetworkReport

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


@pytest.fixture
def pi(tmp_path: Path) -> Iterator[PiNs]:
    env = PiNs(unique_prefix("ddns"), tmp_path)
    try:
        env.up()
        yield env
    finally:
        env.down()


def updates(pi: PiNs, host: str) -> int:
    """How many updates of `host` BIND applied (it logs one line per RR added)."""
    assert pi.named is not None
    return pi.named.log_text().count(f"adding an RR at '{host}.")


def test_aaaa_follows_a_real_ipv6_address_and_a_restart_sends_nothing(pi: PiNs) -> None:
    """Issues 13 and 12: the A record from the network part's choice, the AAAA record from
    an IPv6 address added to the active uplink (monitor -> bus -> dyndns -> BIND); then two
    restarts of the supervisor with both records already right send no UPDATE."""
    port = free_port()
    cfg = pi.config("home", ipv6=True, port=port)
    proc = pi.run(cfg)
    wait_for(lambda: pi.query("home", "A") == {WIRED}, 20, "the A record", lambda: pi.log(cfg))
    sh(pi.pi, f"ip -6 addr add {WIRED6}/64 dev eth1 nodad")
    wait_for(lambda: pi.query("home", "AAAA") == {WIRED6}, 10, "the AAAA record",
             lambda: pi.log(cfg))
    wait_for(lambda: pi.status(port)["dyndns"]["state"] == "ok", 5, "dyndns ok")
    # The real parts' /status sections are the dataclasses the readers and fake parts use.
    typed = typed_status.check(pi.status(port))
    assert set(typed) == {"network", "dyndns", "modem", "pihealth", "alerts"}, typed
    net = typed["network"]
    assert isinstance(net, NetworkReport) and net.active_uplink == "wired"
    assert net.uplinks["wired"].link is True and net.failovers_total >= 1
    dyn = typed["dyndns"]
    assert isinstance(dyn, DyndnsReport) and dyn.name == f"home.{ZONE}" and dyn.records
    assert pi.stop(proc) == 0
    before = updates(pi, "home")
    assert before == 2, pi.named.log_text() if pi.named else ""
    for _ in range(2):
        proc = pi.run(cfg)
        wait_for(lambda: all(r["confirmed"] for r in pi.status(port)["dyndns"]["records"]),
                 20, "both records confirmed after the restart", lambda: pi.log(cfg))
        assert pi.stop(proc) == 0
    assert updates(pi, "home") == before, pi.log(cfg)[-3000:]
    assert "already holds 2001:db8:1::2; no update needed" in pi.log(cfg)
    # The state file went where [paths] said.
    state = json.loads((pi.work / "state" / "dyndns-state.json").read_text())
    assert state["records"]["AAAA"] == {"sent": WIRED6, "published": WIRED6}


def test_interface_mode_publishes_an_address_present_at_start(pi: PiNs) -> None:
    """Issue 11: `dyndns.interface` set, its address there before the supervisor starts (no
    netlink event will ever announce it); a record holding another address is repaired."""
    assert pi.named is not None
    with_drift = pi.config("iface", interface="eth1", port=free_port())
    # The record holds a stale address before we start: the first check must notice.
    subprocess.run(["ip", "netns", "exec", pi.pi, "nsupdate", "-y",
                    f"hmac-sha256:fb-key:{pi.named.secret}"],
                   input=f"server 127.0.0.1 {pi.named.port}\nzone dyn.test\n"
                         "update add iface.dyn.test 30 A 192.0.2.99\nsend\n",
                   text=True, check=True, timeout=10)
    assert pi.query("iface", "A") == {"192.0.2.99"}
    pi.run(with_drift)
    wait_for(lambda: pi.query("iface", "A") == {WIRED}, 20, "the A record from eth1",
             lambda: pi.log(with_drift))


def test_no_network_watches_addresses_and_modem_not_managed(pi: PiNs) -> None:
    """Issues 14, 10 and 9: `failberry run --no-network` (sidecar: the mobile uplink) with
    `[modem] enabled = false`: dyndns says what it waits for, then publishes the address that
    something else put on ppp0 (A and AAAA); no modem part runs and status says so; `failberry
    status -c` finds the supervisor through run_dir although --port moved it."""
    port = free_port()
    cfg = pi.config("nonet", mode="sidecar", ipv6=True, port=9)
    proc = pi.run(cfg, "--no-network", "--port", str(port))
    wait_for(lambda: pi.status(port)["dyndns"]["state"] == "waiting", 10, "dyndns waiting",
             lambda: pi.log(cfg))
    doc = pi.status(port)
    assert doc["dyndns"]["waiting_for"] == "an address on ppp0"
    assert doc["modem"]["state"] == "not managed"
    assert "modem" not in doc["restarts"]
    out = subprocess.run(["ip", "netns", "exec", pi.pi, PY, "-m", "failberry", "status", "-c",
                          str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "modem: not managed, modem.enabled = false" in out.stdout
    assert "waiting for an address on ppp0" in out.stdout
    sh(pi.pi, f"ip addr add {MOBILE} peer 198.51.100.1/32 dev ppp0; ip link set ppp0 up;"
              f"ip -6 addr add {MOBILE6}/64 dev ppp0 nodad")
    wait_for(lambda: pi.query("nonet", "A") == {MOBILE}, 10, "the A record from ppp0",
             lambda: pi.log(cfg))
    wait_for(lambda: pi.query("nonet", "AAAA") == {MOBILE6}, 10, "the AAAA record",
             lambda: pi.log(cfg))
    assert pi.stop(proc) == 0
    assert not (pi.work / "run" / "supervisor.json").exists()


def test_two_instances_with_their_own_paths_do_not_collide(pi: PiNs) -> None:
    """Issue 9: two supervisors in two namespaces on one host, each with its own [paths]:
    each keeps its saved sysctls, data use and runtime file in its own directories, and
    stopping each restores its own namespace's settings."""
    other = f"{pi.pi}2"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        sh(other, "ip link set lo up; ip link add eth1 type veth peer name x1;"
                  "ip link add eth0 type veth peer name x0; ip link add ppp0 type veth peer "
                  "name x2; ip addr add 192.168.50.1/24 dev eth0; ip addr add "
                  f"{WIRED}/24 dev eth1; for i in eth0 eth1 x0 x1; do ip link set $i up; done;"
                  "sysctl -qw net.ipv4.ip_forward=0")
        sh(pi.pi, "sysctl -qw net.ipv4.ip_forward=0")
        ports = (free_port(), free_port())
        cfgs = [pi.config(f"inst{i}", port=ports[i], run_dir=pi.work / f"run{i}",
                          state_dir=pi.work / f"state{i}") for i in (0, 1)]
        procs = [pi.run(cfgs[0]), pi.run(cfgs[1], ns=other)]
        for i, ns in ((0, pi.pi), (1, other)):
            wait_for(lambda i=i, ns=ns: pi.status(ports[i], ns)["parts"]["network"]["state"]  # type: ignore[misc]
                     in ("ok", "degraded", "down"), 20, f"instance {i}",
                     lambda i=i: pi.log(cfgs[i]))  # type: ignore[misc]
            assert sh(ns, "sysctl -n net.ipv4.ip_forward").strip() == "1"
            saved = json.loads((pi.work / f"run{i}" / "sysctl-saved.json").read_text())
            assert saved["net/ipv4/ip_forward"] == "0"
            runfile = json.loads((pi.work / f"run{i}" / "supervisor.json").read_text())
            assert runfile["url"] == f"http://127.0.0.1:{ports[i]}/status"
        assert pi.stop(procs[0]) == 0
        # The first one's stop restored its own namespace, and not the other's files.
        assert sh(pi.pi, "sysctl -n net.ipv4.ip_forward").strip() == "0"
        assert (pi.work / "run1" / "sysctl-saved.json").exists()
        assert sh(other, "sysctl -n net.ipv4.ip_forward").strip() == "1"
        assert pi.stop(procs[1]) == 0
        assert sh(other, "sysctl -n net.ipv4.ip_forward").strip() == "0"
        for i in (0, 1):
            assert (pi.work / f"state{i}" / "mobile-usage.json").exists()
            assert not (pi.work / f"run{i}" / "supervisor.json").exists()
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


def test_net_clean_restores_sysctls_saved_in_the_configs_run_dir(pi: PiNs) -> None:
    """Issue 9: `failberry net clean -c FILE` looks for the saved sysctls in FILE's
    paths.run_dir (it used /run/failberry whatever the config said)."""
    run_dir = pi.work / "elsewhere"
    cfg = pi.config("clean", run_dir=run_dir)
    run_dir.mkdir()
    (run_dir / "sysctl-saved.json").write_text('{"net/ipv4/ip_forward": "0"}')
    sh(pi.pi, "sysctl -qw net.ipv4.ip_forward=1")
    out = subprocess.run(["ip", "netns", "exec", pi.pi, PY, "-m", "failberry", "net", "clean",
                          "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "sysctl net/ipv4/ip_forward: 1 -> 0 (restored)" in out.stdout
    assert sh(pi.pi, "sysctl -n net.ipv4.ip_forward").strip() == "0"
    assert not (run_dir / "sysctl-saved.json").exists()
