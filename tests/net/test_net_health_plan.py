"""Health-check bytes, pure: where the plan counts them, and how the usage file keeps them
apart from the devices."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from failberry import config
from failberry.net import plan
from failberry.net.plan import LinkState
from failberry.net.usage import HEALTH_KEY, Usage

GATEWAY = """
[modem]
apn = "internet"
[lan]
interface = "eth0"
address = "192.168.50.1/24"
[uplink.wired]
interface = "eth1"
address = "dhcp"
[uplink.mobile]
[failover]
mode = "gateway"
allowed_devices = ["192.168.50.10"]
[health]
port = 9443
"""

LINKS = {"eth1": LinkState(True, True, "203.0.113.2", None, "203.0.113.1"),
         "ppp0": LinkState(True, True, "100.64.0.2", "100.64.0.1")}


def chain(p: plan.NetPlan | tuple[plan.ChainSpec, ...], name: str) -> plan.ChainSpec:
    chains = p.chains if isinstance(p, plan.NetPlan) else p
    [c] = [c for c in chains if c.name == name]
    return c


def test_the_health_port_on_the_mobile_link_goes_through_the_counter_first() -> None:
    cfg = config.parse(GATEWAY)
    for active in ("wired", "mobile", None):
        p = plan.plan(cfg, LINKS, active)
        inp = chain(p, plan.CHAIN_INPUT)
        # First, before any ACCEPT of established traffic would end the walk.
        assert inp.rules[0] == {"in-interface": "ppp0", "protocol": "tcp",
                                "tcp": {"dport": "9443"}, "target": plan.CHAIN_HEALTH}
        assert not any(r.get("target") == plan.CHAIN_HEALTH for r in inp.rules[1:])
        out = chain(p, plan.CHAIN_OUTPUT)
        assert out.hook == "OUTPUT" and out.table == "filter"
        assert out.rules == ({"out-interface": "ppp0", "protocol": "tcp",
                              "tcp": {"sport": "9443"}, "target": plan.CHAIN_HEALTH},)
        counter = chain(p, plan.CHAIN_HEALTH)
        assert counter.hook == "" and counter.rules == ({"target": "RETURN"},)
        assert plan.HEALTH_COUNTER == (plan.CHAIN_HEALTH, 0)


def test_the_closed_filter_of_a_clean_stop_keeps_counting() -> None:
    names = {c.name for c in plan.closed(config.parse(GATEWAY))}
    assert {plan.CHAIN_HEALTH, plan.CHAIN_OUTPUT, plan.CHAIN_INPUT} <= names


def test_sidecar_counts_on_its_only_uplink() -> None:
    cfg = config.parse('[modem]\napn = "internet"\n')
    p = plan.plan(cfg, {"ppp0": LINKS["ppp0"]}, "mobile")
    assert chain(p, plan.CHAIN_INPUT).rules[0]["tcp"] == {"dport": "9000"}


def test_health_bytes_are_kept_per_period_but_not_as_a_device(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    day = dt.date(2026, 3, 15)
    u = Usage(path, 1, cap=1000)
    u.sample({"192.168.50.10": 0, HEALTH_KEY: 0}, day)
    u.sample({"192.168.50.10": 100, HEALTH_KEY: 2000}, day)
    assert u.totals() == {"192.168.50.10": 100}
    assert u.total(HEALTH_KEY) == 2000
    assert not u.over_cap()  # health checks are not a device's use
    u.sample({"192.168.50.10": 100, HEALTH_KEY: 30}, day)  # the chain was rewritten
    assert u.total(HEALTH_KEY) == 2030
    assert u.maybe_persist(now=0.0)
    assert json.loads(path.read_text())["bytes"] == {"192.168.50.10": 100, HEALTH_KEY: 2030}
    again = Usage(path, 1, cap=1000)  # a restart that finds the counters where they were
    again.sample({"192.168.50.10": 100, HEALTH_KEY: 50}, day)
    assert again.total(HEALTH_KEY) == 2050
    assert again.totals() == {"192.168.50.10": 100}
    again.sample({"192.168.50.10": 150, HEALTH_KEY: 90}, dt.date(2026, 4, 1))  # a new period
    assert again.total(HEALTH_KEY) == 0
    again.sample({"192.168.50.10": 150, HEALTH_KEY: 100}, dt.date(2026, 4, 1))
    assert again.total(HEALTH_KEY) == 10
