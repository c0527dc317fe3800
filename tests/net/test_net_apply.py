"""The appliers in the Pi namespace: apply twice changes nothing, drift is repaired, clean
leaves exactly what was there before."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from topology import PY, ROOT, Topology, config_text, topology_fixture

pytestmark = [pytest.mark.root]

topo = pytest.fixture(topology_fixture)


def net(topo: Topology, tmp: Path, *args: str) -> list[str]:
    """`python -m failberry.net ARGS` in the Pi namespace; the changes it printed."""
    out = subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry.net",
                          *args, "-c", str(tmp / "failberry.toml"), "--state-dir",
                          str(tmp / "state")], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.timeout(120)
def test_apply_is_idempotent_repairs_drift_and_clean_restores(topo: Topology,
                                                              tmp_path: Path) -> None:
    (tmp_path / "failberry.toml").write_text(config_text())
    before = topo.snapshot()
    assert net(topo, tmp_path, "apply", "wired")
    applied = topo.snapshot()
    assert applied != before
    assert "from all lookup 2000" in applied["rule"]
    assert "-A FORWARD -j fb-forward" in applied["iptables"]
    assert "net.ipv4.ip_forward = 1" in applied["sysctl"]

    assert net(topo, tmp_path, "apply", "wired") == []
    assert topo.snapshot() == applied

    # Someone deletes things by hand; the next apply puts back exactly those.
    topo.sh("pi", "iptables-legacy -D FORWARD -j fb-forward; iptables-legacy -F fb-input;"
                  "iptables-legacy -t nat -A fb-postrouting -j ACCEPT;"
                  "ip rule del pref 10100; ip route del default table 2000;"
                  "sysctl -qw net.ipv4.conf.eth1.rp_filter=1")
    repaired = net(topo, tmp_path, "apply", "wired")
    assert len(repaired) >= 6
    assert topo.snapshot() == applied

    switched = net(topo, tmp_path, "apply", "mobile")
    assert any("table 2000: default via 100.64.0.1 dev ppp0" in c for c in switched)
    assert topo.snapshot() != applied

    out = subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry", "net",
                          "clean", "--state-dir", str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "deleted chain fb-forward" in out.stdout
    assert topo.snapshot() == before
    assert net(topo, tmp_path, "clean") == []  # nothing left to remove


@pytest.mark.timeout(60)
def test_clean_leaves_other_rules_routes_and_chains_alone(topo: Topology,
                                                          tmp_path: Path) -> None:
    (tmp_path / "failberry.toml").write_text(config_text())
    topo.sh("pi", "ip rule add pref 20000 from 192.168.50.99 lookup 100;"
                  "ip route add default via 203.0.113.1 table 100;"
                  "iptables-legacy -N other; iptables-legacy -A INPUT -j other;"
                  "iptables-legacy -t nat -A POSTROUTING -o eth1 -j MASQUERADE")
    before = topo.snapshot()
    net(topo, tmp_path, "apply", "wired")
    net(topo, tmp_path, "clean")
    assert topo.snapshot() == before
