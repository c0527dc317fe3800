"""The netlink monitor: real link, carrier and address events from a namespace."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from pyroute2 import IPRoute, netns
from topology import unique_prefix

from failberry.bus import AddressChanged
from failberry.net.monitor import Event, LinkChanged, LinkMonitor

pytestmark = [pytest.mark.root]


@pytest.mark.timeout(30)
def test_link_carrier_address_and_interfaces_coming_and_going() -> None:
    ns = unique_prefix("mon") + "pi"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    netns.pushns(ns)
    try:
        asyncio.run(_scenario(ns))
    finally:
        netns.popns()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def sh(ns: str, cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], check=True)


async def _scenario(ns: str) -> None:
    nl = IPRoute()

    def links() -> list[tuple[int, str]]:
        return [(m["index"], m.get_attr("IFLA_IFNAME")) for m in nl.get_links()]

    mon = LinkMonitor(IPRoute, links)
    mon.start()
    try:
        async def expect(want: Event) -> None:
            async with asyncio.timeout(5):
                while (await mon.events.get()) != want:
                    pass

        sh(ns, "ip link add ppp0 type veth peer name peer0")
        await expect(LinkChanged("ppp0", True, False))
        sh(ns, "ip link set peer0 up; ip link set ppp0 up")
        await expect(LinkChanged("ppp0", True, True))
        sh(ns, "ip addr add 100.64.0.2/24 dev ppp0")
        await expect(AddressChanged("ppp0", "100.64.0.2"))
        # IPv6 too (dynamic DNS publishes AAAA from these); an address past its preferred
        # lifetime is not one to use, reported like a removal.
        sh(ns, "ip -6 addr add 2001:db8::2/64 dev ppp0 nodad")
        await expect(AddressChanged("ppp0", "2001:db8::2", 6))
        sh(ns, "ip -6 addr add 2001:db8::4/64 dev ppp0 nodad preferred_lft 0")
        await expect(AddressChanged("ppp0", None, 6))
        sh(ns, "ip link set peer0 down")  # the far end goes away: carrier lost
        await expect(LinkChanged("ppp0", True, False))
        sh(ns, "ip addr del 100.64.0.2/24 dev ppp0")
        await expect(AddressChanged("ppp0", None))
        sh(ns, "ip link del ppp0")
        await expect(LinkChanged("ppp0", False, False))
    finally:
        mon.stop()
        nl.close()
