"""`uplink.mobile.interface = "auto"`: the network part follows the interface the modem's
link comes up on, whatever its name, again after every re-enumeration; and the status says
when the mobile address is private (a HiLink stick's NAT, CGNAT)."""

from __future__ import annotations

import asyncio

from failberry import config
from failberry.bus import Bus, ModemStateChanged
from failberry.modem.follow import follow, private_address, resolve_mobile
from failberry.net import plan
from failberry.net.plan import LinkState
from failberry.statuscmd import render

AUTO = """
[modem]
apn = "internet"
[lan]
interface = "eth0"
address = "192.168.50.1/24"
[uplink.mobile]
interface = "auto"
probe_targets = ["icmp:192.0.2.1"]
"""


def test_follow_applies_each_new_interface() -> None:
    async def go() -> list[str]:
        bus, seen = Bus(), []

        async def apply(name: str) -> None:
            seen.append(name)

        task = asyncio.create_task(follow(bus, config.parse(AUTO), apply))
        await asyncio.sleep(0)
        for state, iface in (("connected", "wwan0"), ("lost", None), ("connected", "wwan0"),
                             ("connected", "eth1")):  # re-enumerated under a new name
            bus.publish(ModemStateChanged(state, "x", "", iface))
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return seen

    assert asyncio.run(go()) == ["wwan0", "eth1"]


def test_follow_does_nothing_for_a_named_interface() -> None:
    async def go() -> None:
        cfg = config.parse(AUTO.replace('interface = "auto"', 'interface = "ppp0"'))

        async def apply(name: str) -> None:
            raise AssertionError(name)

        await asyncio.wait_for(follow(Bus(), cfg, apply), 1)  # returns at once

    asyncio.run(go())


def test_a_restarted_part_built_from_the_resolved_config_still_follows() -> None:
    async def go() -> list[str]:
        bus, seen = Bus(), []

        async def apply(name: str) -> None:
            seen.append(name)

        resolved = resolve_mobile(config.parse(AUTO), "wwan0")
        task = asyncio.create_task(follow(bus, resolved, apply))
        await asyncio.sleep(0)
        bus.publish(ModemStateChanged("connected", "x", "", "wwan1"))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return seen

    assert asyncio.run(go()) == ["wwan1"]


def test_resolved_config_plans_the_sticks_interface() -> None:
    cfg = resolve_mobile(config.parse(AUTO), "wwan0")
    links = {"wwan0": LinkState(True, True, "10.99.0.53", None, "10.99.0.1")}
    p = plan.plan(cfg, links, "mobile")
    assert {(r.interface, r.gateway) for r in p.routes} == {("wwan0", "10.99.0.1")}
    assert "auto" not in repr(p.chains) and "'wwan0'" in repr(p.chains)


def test_private_address_is_said() -> None:
    assert private_address("192.168.8.100") and private_address("100.71.3.9")
    assert private_address("81.2.69.160") is False and private_address(None) is None
    doc = {"modem": {"state": "connected", "address": "192.168.8.100",
                     "private_address": True, "data_path": "hilink"}}
    assert "modem: connected, via hilink, address 192.168.8.100 (private: NAT, no inbound)" \
        in render(doc)
