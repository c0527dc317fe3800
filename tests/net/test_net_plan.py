"""The desired network state, pure: routes, rules, chains for config and link state."""

from __future__ import annotations

from failberry import config
from failberry.net import plan
from failberry.net.plan import LinkState

GATEWAY = """
[modem]
apn = "internet"
[lan]
interface = "eth0"
address = "192.168.50.1/24"
[uplink.wired]
interface = "eth1"
address = "dhcp"
probe_targets = ["icmp:192.0.2.1"]
[uplink.mobile]
probe_targets = ["icmp:192.0.2.1"]
[failover]
mode = "gateway"
quorum = 1
allowed_devices = ["192.168.50.10", "AA:BB:CC:DD:EE:FF"]
critical_devices = ["192.168.50.10"]
data_cap = "1GiB"
[firewall]
allow_tcp = [9000]
"""

LINKS = {"eth1": LinkState(True, True, "203.0.113.2", None, "203.0.113.1"),
         "ppp0": LinkState(True, True, "100.64.0.2", "100.64.0.1")}


def rules_of(p: plan.NetPlan, name: str) -> list[dict[str, object]]:
    return [r for c in p.chains if c.name == name for r in c.rules]


def test_tables_rules_and_the_active_default() -> None:
    cfg = config.parse(GATEWAY)
    p = plan.plan(cfg, LINKS, "wired")
    assert set(p.routes) == {plan.RouteSpec(2001, "eth1", "203.0.113.1"),  # learned (DHCP)
                             plan.RouteSpec(2002, "ppp0", "100.64.0.1"),  # the ppp peer
                             plan.RouteSpec(2000, "eth1", "203.0.113.1")}
    assert [(r.priority, r.table, r.src, r.suppress_prefixlen, r.fwmark) for r in p.rules] == [
        (10001, 2001, None, None, 0x1000000), (10002, 2002, None, None, 0x2000000),  # replies
        (10010, 2001, "203.0.113.2", None, None), (10020, 2002, "100.64.0.2", None, None),
        (10050, 254, None, 0, None), (10100, 2000, None, None, None)]
    assert p.sysctls["net/ipv4/conf/ppp0/rp_filter"] == "2"
    switched = plan.plan(cfg, LINKS, "mobile")
    assert plan.RouteSpec(2000, "ppp0", "100.64.0.1") in switched.routes


def test_an_uplink_without_carrier_gets_no_route_or_rule() -> None:
    cfg = config.parse(GATEWAY)
    links = {**LINKS, "eth1": LinkState(True, False, "203.0.113.2")}
    p = plan.plan(cfg, links, "mobile")
    assert all(r.interface == "ppp0" for r in p.routes)
    assert all(r.src != "203.0.113.2" for r in p.rules)


def test_lan_forwards_only_to_the_active_uplink() -> None:
    cfg = config.parse(GATEWAY)
    fwd = rules_of(plan.plan(cfg, LINKS, "wired"), plan.CHAIN_FORWARD)
    to_wired = [r["target"] for r in fwd if r.get("in-interface") == "eth0"
                and r.get("out-interface") == "eth1"]
    to_mobile = [r["target"] for r in fwd if r.get("in-interface") == "eth0"
                 and r.get("out-interface") == "ppp0"]
    assert to_wired[-1] == "ACCEPT" and to_mobile == ["REJECT"]
    fwd = rules_of(plan.plan(cfg, LINKS, "mobile"), plan.CHAIN_FORWARD)
    assert [r["target"] for r in fwd if r.get("out-interface") == "eth1"] == ["REJECT"]
    assert fwd[-1]["target"] == plan.CHAIN_MOBILE_OUT


def test_uplink_input_is_closed_except_opened_ports() -> None:
    cfg = config.parse(GATEWAY)
    inp = rules_of(plan.plan(cfg, LINKS, "wired"), plan.CHAIN_INPUT)
    eth1 = [r for r in inp if r["in-interface"] == "eth1"]
    assert eth1[-1] == {"in-interface": "eth1", "target": "DROP"}
    assert {"in-interface": "eth1", "protocol": "tcp", "tcp": {"dport": "9000"},
            "target": "ACCEPT"} in eth1
    assert not any(r.get("tcp") == {"dport": "22"} for r in inp)


def test_allowlist_counters_and_the_cap() -> None:
    cfg = config.parse(GATEWAY)
    out, back = plan.metered_rules(cfg, over_cap=False)
    assert [r.get("src") or r.get("mac", {}).get("mac-source") for r in out[:-1]] == [
        "192.168.50.10", "192.168.50.10", "aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff"]
    assert out[-1] == {"target": "REJECT"} and back[-1] == {"target": "ACCEPT"}
    keys = plan.counter_keys(cfg, over_cap=False)
    assert keys["aa:bb:cc:dd:ee:ff"] == (("fb-mobile-in", 1), ("fb-mobile-out", 3))
    out, _ = plan.metered_rules(cfg, over_cap=True)
    assert [r.get("src") for r in out[:-1]] == ["192.168.50.10", "192.168.50.10"]
    keys = plan.counter_keys(cfg, over_cap=True)
    assert keys["aa:bb:cc:dd:ee:ff"] == (("fb-mobile-in", 1),)
    assert out[keys["192.168.50.10"][1][1]]["target"] == "ACCEPT"


def test_sidecar_runs_the_mobile_uplink_only() -> None:
    cfg = config.parse('[modem]\napn = "internet"\n')
    assert [u.name for u in plan.uplinks(cfg)] == ["mobile"]
    p = plan.plan(cfg, {"ppp0": LinkState(True, True, "100.64.0.2", "100.64.0.1")}, "mobile")
    assert plan.RouteSpec(2000, "ppp0", "100.64.0.1") in p.routes
    assert {"out-interface": "ppp0", "target": "MASQUERADE"} in rules_of(p, plan.CHAIN_NAT)
