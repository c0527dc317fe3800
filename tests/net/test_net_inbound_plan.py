"""Port forwards and reply paths in the plan, pure: which chains, rules, routes and policy
rules `[[forward]]` and the topology give."""

from __future__ import annotations

from failberry import config
from failberry.net import inbound, plan
from failberry.net.plan import LinkState, RouteSpec, RuleSpec

BASE = """
[modem]
apn = "internet"
[lan]
interface = "eth0"
address = "192.168.1.2/24"
{gateway}
[uplink.wired]
interface = "eth1"
address = "dhcp"
probe_targets = ["icmp:192.0.2.1"]
[uplink.mobile]
probe_targets = ["icmp:192.0.2.1"]
[failover]
mode = "{mode}"
"""
FORWARDS = """
[[forward]]
protocol = "udp"
port = 1194
to = "192.168.1.10"
[[forward]]
protocol = "tcp"
port = "8000-8001"
to = "192.168.1.11"
to_port = "9000-9001"
uplinks = ["mobile"]
"""
LINKS = {"eth1": LinkState(True, True, "203.0.113.2", None, "203.0.113.1"),
         "ppp0": LinkState(True, True, "198.51.100.2", "198.51.100.1")}


def cfg(mode: str = "gateway", forwards: str = FORWARDS,
        gateway: str = 'gateway = "192.168.1.1"') -> config.Config:
    return config.parse(BASE.format(mode=mode, gateway=gateway) + forwards)


def chain(p: plan.NetPlan, name: str) -> list[dict[str, object]]:
    found = [c for c in p.chains if c.name == name]
    assert len(found) == 1, name
    return list(found[0].rules)


def test_gateway_forwards_on_their_uplinks() -> None:
    p = plan.plan(cfg(), LINKS, "wired")
    dnat = chain(p, inbound.CHAIN_DNAT)
    assert [(r["in-interface"], r["target"]) for r in dnat] == [
        ("eth1", {"DNAT": {"to-destination": "192.168.1.10"}}),
        ("ppp0", {"DNAT": {"to-destination": "192.168.1.10"}}),
        # A range moved to other ports: one rule per port, mapped one to one.
        ("ppp0", {"DNAT": {"to-destination": "192.168.1.11:9000"}}),
        ("ppp0", {"DNAT": {"to-destination": "192.168.1.11:9001"}})]
    assert dnat[2]["tcp"] == {"dport": "8000"}
    # fb-forward jumps to fb-inbound first; no SNAT to the LAN in gateway mode.
    assert chain(p, plan.CHAIN_FORWARD)[0] == {"target": inbound.CHAIN_FORWARDS}
    accepts = chain(p, inbound.CHAIN_FORWARDS)
    assert len(accepts) == 6
    assert accepts[0]["in-interface"] == "eth1" and accepts[0]["udp"] == {"dport": "1194"}
    assert accepts[5]["src"] == "192.168.1.11/32" and accepts[5]["tcp"] == {"sport": "9000:9001"}
    assert not any("SNAT" in str(r) for r in chain(p, plan.CHAIN_NAT))
    where = inbound.forward_counters(cfg(), plan.uplinks(cfg()))
    assert where == {"udp/1194": [(0, "in"), (1, "out"), (2, "in"), (3, "out")],
                     "tcp/8000-8001": [(4, "in"), (5, "out")]}


def test_reply_marks_and_their_rules() -> None:
    c = cfg()
    p = plan.plan(c, LINKS, "wired")
    marks = chain(p, inbound.CHAIN_PATHMARK)
    assert [r.get("in-interface") for r in marks] == ["eth1", "ppp0", "eth0"]
    assert marks[0]["target"] == {"CONNMARK": {"set-xmark": "0x1000000/0xf000000"}}
    assert marks[2]["conntrack"] == {"ctdir": "REPLY"}  # forwarded replies get it back
    assert chain(p, inbound.CHAIN_PATHMARK_OUT)[0]["conntrack"] == {"ctdir": "REPLY"}
    assert RuleSpec(10001, 2001, fwmark=0x1000000, fwmask=0xF000000) in p.rules
    assert RuleSpec(10002, 2002, fwmark=0x2000000, fwmask=0xF000000) in p.rules
    assert not any(r.table == inbound.TABLE_LAN_RETURN for r in p.rules)  # gateway mode
    # An uplink without an address has no table, so no rule into it.
    down = plan.plan(c, {**LINKS, "ppp0": LinkState(True, False)}, "wired")
    assert [r.priority for r in down.rules if r.fwmark] == [10001]


def test_sidecar_forwards_mobile_only_with_snat_and_lan_return() -> None:
    p = plan.plan(cfg("sidecar"), LINKS, "mobile")
    assert {r["in-interface"] for r in chain(p, inbound.CHAIN_DNAT)} == {"ppp0"}
    snat = [r for r in chain(p, plan.CHAIN_NAT) if "SNAT" in str(r["target"])]
    assert [r["target"] for r in snat] == [{"SNAT": {"to-source": "192.168.1.2"}}] * 2
    assert snat[0]["out-interface"] == "eth0"
    lan = chain(p, inbound.CHAIN_PATHMARK)[1]
    assert lan["src"] == "!192.168.1.0/24" and lan["addrtype"] == {"dst-type": "LOCAL"}
    assert RouteSpec(2009, "eth0", "192.168.1.1") in p.routes
    assert RuleSpec(10009, 2009, fwmark=0xF000000, fwmask=0xF000000) in p.rules
    assert p.sysctls["net/ipv4/conf/eth0/rp_filter"] == "2"
    # Without lan.gateway there is nowhere to send them: no LAN return path.
    bare = plan.plan(cfg("sidecar", gateway=""), LINKS, "mobile")
    assert not any(r.table == 2009 for r in bare.routes)
    assert "net/ipv4/conf/eth0/rp_filter" not in bare.sysctls


def test_no_forwards_no_forward_chains_and_stop_keeps_none() -> None:
    p = plan.plan(cfg(forwards=""), LINKS, "wired")
    names = {c.name for c in p.chains}
    assert inbound.CHAIN_DNAT not in names and inbound.CHAIN_FORWARDS not in names
    assert {inbound.CHAIN_PATHMARK, inbound.CHAIN_PATHMARK_OUT} <= names
    closed = plan.closed(cfg())
    assert all(c.table == "filter" for c in closed)
    assert inbound.CHAIN_FORWARDS not in {c.name for c in closed}
    fwd = next(c for c in closed if c.name == plan.CHAIN_FORWARD)
    assert {"target": inbound.CHAIN_FORWARDS} not in fwd.rules
