"""IPv6 on the uplinks: with real packets between namespaces, a listener on
`[::]` on the Pi is closed to the uplink side (link-local and global addresses) except the
configured ports, open to the LAN; nothing is forwarded from the uplinks, LAN IPv6 does not
leave through them; a stop leaves them closed (fail closed), and `failberry net clean` leaves
ip6tables exactly as before."""

from __future__ import annotations

import re
import select
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from topology import PY, ROOT, Part, Topology, config_text, topology_fixture

from failberry import config
from failberry.errors import FailberryError
from failberry.net import firewall6
from failberry.net.plan import ChainSpec

PI_WIRED6 = "2001:db8:1::2"
WISP6 = "2001:db8:1::1"
PI_LAN6 = "fd00:50::1"
LAN_HOST6 = "fd00:50::10"
CLOSED = 8081  # not in [firewall]
OPEN = 9000  # config_text()'s allow_tcp


def enable_ipv6(topo: Topology) -> None:
    """Turn IPv6 on in the namespaces (the topology turns it off), without DAD delays, and
    give the wired link and the LAN global addresses; the Pi forwards IPv6."""
    for ns in ("pi", "lan", "wisp", "misp"):
        topo.sh(ns, "for c in /proc/sys/net/ipv6/conf/*/accept_dad; do echo 0 > $c; done;"
                    "sysctl -qw net.ipv6.conf.all.disable_ipv6=0 "
                    "net.ipv6.conf.default.disable_ipv6=0")
    topo.sh("pi", f"ip -6 addr add {PI_WIRED6}/64 dev eth1 nodad;"
                  f"ip -6 addr add {PI_LAN6}/64 dev eth0 nodad;"
                  "sysctl -qw net.ipv6.conf.all.forwarding=1")
    topo.sh("wisp", f"ip -6 addr add {WISP6}/64 dev eth0 nodad;"
                    f"ip -6 route add fd00:50::/64 via {PI_WIRED6}")
    topo.sh("lan", f"ip -6 addr add {LAN_HOST6}/64 dev eth0 nodad;"
                   f"ip -6 route add default via {PI_LAN6}")
    # x_tables makes a table on first use (python-iptables' Rule6 looks at every table):
    # make them now, so "as before" compares contents.
    topo.sh("pi", "for t in filter nat mangle raw security; do "
                  "ip6tables-legacy -t $t -S >/dev/null; done")


def link_local(topo: Topology, ns: str, dev: str) -> str:
    """The link-local address of an interface."""
    out = topo.sh(ns, f"ip -6 -o addr show dev {dev} scope link")
    m = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", out)
    assert m, out
    return m.group(1)


def save6(topo: Topology) -> str:
    """ip6tables-legacy-save without counters and dates."""
    out = topo.sh("pi", "ip6tables-legacy-save")
    return "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines()
                     if not line.startswith("#"))


def reaches(topo: Topology, ns: str, addr: str, port: int, dev: str | None = None, *,
            timeout: float = 1.0) -> bool:
    """A TCP handshake from namespace `ns` to [addr]:port completes (the listener's backlog
    completes it; nobody needs to accept)."""
    with topo.inside(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        scope = socket.if_nametoindex(dev) if dev else 0
    with s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port, 0, scope))
            return True
        except OSError:
            return False


def udp_arrives(topo: Topology, src_ns: str, dst_ns: str, dst: str,
                timeout: float = 1.0) -> bool:
    """A datagram sent from `src_ns` to [dst]:4000 arrives at a socket in `dst_ns`."""
    with topo.inside(dst_ns):
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with topo.inside(src_ns):
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((dst, 4000))
        try:
            tx.sendto(b"x", (dst, 4000))
        except OSError:
            return False
        return bool(select.select([rx], [], [], timeout)[0])


@pytest.fixture
def topo6() -> Iterator[Topology]:
    """The topology with IPv6 on, and listeners on [::] in the Pi namespace."""
    for topo in topology_fixture():
        enable_ipv6(topo)
        yield topo


def listen(topo: Topology, port: int) -> socket.socket:
    """A TCP listener on [::]:port in the Pi namespace."""
    with topo.inside("pi"):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    return s


def exposure(topo: Topology) -> dict[str, bool]:
    """What reaches the Pi's [::] listeners and what is forwarded, by path."""
    wired_ll = link_local(topo, "pi", "eth1")
    mobile_ll = link_local(topo, "pi", "ppp0")
    lan_ll = link_local(topo, "pi", "eth0")
    return {
        "wired link-local": reaches(topo, "wisp", wired_ll, CLOSED, "eth0"),
        "wired global": reaches(topo, "wisp", PI_WIRED6, CLOSED),
        "mobile link-local": reaches(topo, "misp", mobile_ll, CLOSED, "eth0"),
        "wired global, allowed port": reaches(topo, "wisp", PI_WIRED6, OPEN),
        "LAN global": reaches(topo, "lan", PI_LAN6, CLOSED),
        "LAN link-local": reaches(topo, "lan", lan_ll, CLOSED, "eth0"),
        "forward uplink -> LAN": udp_arrives(topo, "wisp", "lan", LAN_HOST6),
        "forward LAN -> uplink": udp_arrives(topo, "lan", "wisp", WISP6),
    }


OPEN_ALL = {"wired link-local": True, "wired global": True, "mobile link-local": True,
            "wired global, allowed port": True, "LAN global": True, "LAN link-local": True,
            "forward uplink -> LAN": True, "forward LAN -> uplink": True}
FILTERED = {**OPEN_ALL, "wired link-local": False, "wired global": False,
            "mobile link-local": False, "forward uplink -> LAN": False,
            "forward LAN -> uplink": False}


@pytest.mark.root
@pytest.mark.timeout(120)
def test_uplinks_closed_to_ipv6_lan_open_stop_keeps_them_closed(topo6: Topology,
                                                               tmp_path: Path) -> None:
    topo = topo6
    listeners = [listen(topo, CLOSED), listen(topo, OPEN)]
    try:
        before = save6(topo)
        # Without failberry's IPv6 chains every path is open: the test can fail.
        assert exposure(topo) == OPEN_ALL
        part = Part(topo, tmp_path, config_text())
        part.active("wired")
        # Forget every neighbour, so the uplink side has to get through neighbour discovery
        # again (the allowed port is reachable only if it does).
        for ns in ("pi", "lan", "wisp", "misp"):
            topo.sh(ns, "ip -6 neigh flush all")
        assert exposure(topo) == FILTERED
        applied = save6(topo)
        assert "-A INPUT -j fb-input" in applied
        assert part.stop() == 0
        assert save6(topo) == applied  # a stop leaves the uplinks closed...
        assert exposure(topo) == FILTERED
        out = subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry",
                              "net", "clean", "--state-dir", str(tmp_path / "state")],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert save6(topo) == before  # ...`failberry net clean` opens them again
        assert exposure(topo) == OPEN_ALL
    finally:
        for s in listeners:
            s.close()


def net(topo: Topology, tmp: Path, *args: str) -> list[str]:
    """`python -m failberry.net ARGS` in the Pi namespace; the changes it printed."""
    out = subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry.net",
                          *args, "-c", str(tmp / "failberry.toml"), "--state-dir",
                          str(tmp / "state")], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.root
@pytest.mark.timeout(120)
def test_ipv6_apply_is_idempotent_repairs_drift_and_net_clean_removes(
        topo6: Topology, tmp_path: Path) -> None:
    topo = topo6
    (tmp_path / "failberry.toml").write_text(config_text())
    topo.sh("pi", "ip6tables-legacy -N other; ip6tables-legacy -A INPUT -j other")
    before = save6(topo)
    changes = net(topo, tmp_path, "apply", "wired")
    assert "ip6 filter: created chain fb-input" in changes
    applied = save6(topo)
    assert "-A fb-input -i eth1 -j DROP" in applied
    assert "-A fb-forward -o ppp0 -j REJECT --reject-with icmp6-adm-prohibited" in applied
    assert not [c for c in net(topo, tmp_path, "apply", "wired") if c.startswith("ip6")]
    topo.sh("pi", "ip6tables-legacy -D INPUT -j fb-input; ip6tables-legacy -F fb-forward")
    repaired = [c for c in net(topo, tmp_path, "apply", "mobile") if c.startswith("ip6")]
    assert repaired == ["ip6 filter: wrote fb-forward (4 rules)",
                        "ip6 filter: added jump INPUT -> fb-input"]
    assert save6(topo) == applied

    out = subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry", "net",
                          "clean", "--state-dir", str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "ip6 filter: deleted chain fb-input" in out.stdout
    assert save6(topo) == before  # the chain someone else made is still there
    assert net(topo, tmp_path, "clean") == []


GATEWAY = """
[modem]
apn = "internet"
[lan]
interface = "br0"
address = "192.168.50.1/24"
[uplink.wired]
interface = "eth1"
address = "dhcp"
probe_targets = ["icmp:192.0.2.1"]
[uplink.mobile]
interface = "wwan0"
probe_targets = ["icmp:192.0.2.1"]
[failover]
mode = "{mode}"
[firewall]
allow_tcp = [22, 9000]
allow_udp = [51820]
"""


def test_ipv6_chains_cover_every_uplink_and_never_the_lan() -> None:
    cfg = config.parse(GATEWAY.format(mode="gateway"))
    inp, fwd = firewall6.chains(cfg)
    assert (inp.name, inp.hook, fwd.name, fwd.hook) == ("fb-input", "INPUT",
                                                        "fb-forward", "FORWARD")
    for dev in ("eth1", "wwan0"):
        mine = [r for r in inp.rules if r.get("in-interface") == dev]
        assert mine[-1] == {"in-interface": dev, "target": "DROP"}
        ports = {(r["protocol"], r[r["protocol"]]["dport"]) for r in mine
                 if r.get("protocol") in ("tcp", "udp") and "sport" not in r[r["protocol"]]}
        assert ports == {("tcp", "22"), ("tcp", "9000"), ("udp", "51820")}
        assert {"in-interface": dev, "target": "DROP"} in fwd.rules
        assert {"out-interface": dev, "target": {"REJECT": {
            "reject-with": "icmp6-adm-prohibited"}}} in fwd.rules
    assert "br0" not in repr((inp, fwd))
    sidecar = firewall6.chains(config.parse(GATEWAY.format(mode="sidecar")))
    assert "eth1" not in repr(sidecar) and "wwan0" in repr(sidecar)


def test_no_ipv6_in_the_kernel_means_nothing_to_do(tmp_path: Path) -> None:
    fw = firewall6.Ip6tcFirewall(if_inet6=tmp_path / "absent")
    cfg = config.parse(GATEWAY.format(mode="gateway"))
    assert fw.sync(firewall6.chains(cfg)) == []
    assert fw.clean() == []


class _Fake:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.synced: list[tuple[ChainSpec, ...]] = []

    def sync(self, chains: Sequence[ChainSpec]) -> list[str]:
        self.synced.append(tuple(chains))
        if self.fail:
            raise FailberryError(f"{self.name} broken")
        return [f"{self.name} synced"]

    def clean(self) -> list[str]:
        if self.fail:
            raise FailberryError(f"{self.name} broken")
        return [f"{self.name} cleaned"]

    def counters(self, table: str, chain: str) -> list[tuple[int, int]]:
        return [(1, 2)] if self.name == "v4" else []


def test_dual_stack_applies_each_family_even_when_the_other_fails() -> None:
    chains6 = firewall6.chains(config.parse(GATEWAY.format(mode="gateway")))
    v4, v6 = _Fake("v4"), _Fake("v6")
    fw = firewall6.DualStackFirewall(v4, v6, chains6)
    assert fw.sync(()) == ["v4 synced", "v6 synced"]
    assert v6.synced == [chains6] and v4.synced == [()]
    assert fw.clean() == ["v4 cleaned", "v6 cleaned"]
    assert fw.counters("filter", "fb-mobile-out") == [(1, 2)]
    broken = firewall6.DualStackFirewall(v4, _Fake("v6", fail=True), chains6)
    with pytest.raises(FailberryError, match="v6 broken"):
        broken.sync(())
    assert len(v4.synced) == 2  # IPv4 applied all the same
    broken = firewall6.DualStackFirewall(_Fake("v4", fail=True), v6, chains6)
    with pytest.raises(FailberryError, match="v4 broken"):
        broken.clean()
