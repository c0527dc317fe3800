"""End to end on the AT-driven Ethernet path (`ncm`/`ecm`): the fake stick on ptys answers
the vendor's bearer command by putting a gateway and dnsmasq on the far side of a veth (the
stick's network interface, `wwan0`, in the test's Pi namespace); the real driver brings the
bearer up, runs udhcpc on `wwan0` there, and follows the bearer's URCs. Then the faults:
the bearer drops silently (only the probes notice) and the stick says it dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from failberry.bus import UplinkHealth
from failberry.modem.bearer import parse_lost_line
from failberry.modem.dhcp import parse_line
from failberry.modem.machine import Phase
from modem_fakes.rig import CpuWatch, Rig


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def in_pool(address: str | None) -> bool:
    return address is not None and address.startswith("10.99.0.") and \
        50 <= int(address.rsplit(".", 1)[1]) <= 60


async def probe_until_down(rig: Rig, rounds: int = 3) -> str:
    """The probes as the network part runs them: a round every 0.3 s, down after `rounds`
    lost in a row, published on the bus."""
    lost = 0
    while lost < rounds:
        lost = 0 if await asyncio.to_thread(rig.ping) else lost + 1
        await asyncio.sleep(0.3)
    reason = f"{rounds} of {rounds} probes lost"
    rig.bus.publish(UplinkHealth("mobile", False, reason))
    return reason


@pytest.mark.root
@pytest.mark.timeout(90)
@pytest.mark.parametrize("vendor", ["huawei", "zte"])
def test_device_added_to_lease_then_silent_wedge_is_redialed(tmp_path: Path,
                                                             vendor: str) -> None:
    async def go() -> None:
        async with Rig(tmp_path, bearer=vendor) as rig:
            watch = CpuWatch()
            await rig.wait_phase(Phase.CONNECTED, 30)
            s = rig.driver.state
            assert s.interface == "wwan0" and in_pool(s.address)
            assert rig.address() == s.address  # the lease is on the interface
            # and its router where the network part learns a gateway from
            assert "default via 10.99.0.1 dev wwan0 metric 4000" in rig.routes()
            assert await asyncio.to_thread(rig.ping)  # and traffic passes
            log = rig.ctl(op="get")["log"]
            up = 'AT^NDISDUP=1,1,"internet"' if vendor == "huawei" else "AT+ZECMCALL=1"
            assert up in log and not any(c.startswith("ATD") for c in log)
            assert rig.channel_open()  # the AT port stays open for monitoring
            await rig.wait_for(lambda: rig.status.parts["modem"].detail.get("signal_dbm"))
            detail = rig.status.parts["modem"].detail
            assert detail["interface"] == "wwan0" and detail["data_path"] == "ncm"
            watch.assert_low()

            # The bearer drops without a URC: carrier and address stay, nothing passes.
            rig.ctl(op="wedge")
            await probe_until_down(rig)
            await rig.wait_for(lambda: rig.driver.state.ladder_counts["redial"] == 1, 20)
            await rig.wait_phase(Phase.CONNECTED, 30)
            counts = rig.driver.state.ladder_counts
            assert counts == {"redial": 1, "modem_reset": 0, "usb_rebind": 0,
                              "port_power": 0, "reboot": 0}
            assert await asyncio.to_thread(rig.ping)
            got = rig.ctl(op="get")
            assert got["bearer_up"] and got["bearer_ups"] == 2 and got["cfun_reset"] == 0
            assert rig.recorder.reasons == []

    run(go())


@pytest.mark.root
@pytest.mark.timeout(90)
def test_bearer_down_urc_redials_at_once(tmp_path: Path) -> None:
    async def go() -> None:
        async with Rig(tmp_path, bearer="huawei") as rig:
            await rig.wait_phase(Phase.CONNECTED, 30)
            rig.ctl(op="urc", line='^NDISSTAT: 0,33,,"IPV4"')
            await rig.wait_for(lambda: rig.phase is not Phase.CONNECTED, 10)
            assert "bearer is down" in (rig.driver.state.last_error or "") or \
                "bearer" in rig.driver.state.reason
            await rig.wait_phase(Phase.CONNECTED, 30)
            assert rig.driver.state.ladder_counts["redial"] == 1
            assert in_pool(rig.address())

    run(go())


def test_dhcp_script_lines() -> None:
    event, lease = parse_line("failberry-dhcp bound 10.99.0.53 24 10.99.0.1 10.99.0.1") \
        or ("", None)
    assert event == "bound" and lease is not None
    assert (lease.address, lease.mask, lease.router, lease.dns) == \
        ("10.99.0.53", "24", "10.99.0.1", ("10.99.0.1",))
    assert parse_line("failberry-dhcp deconfig") == ("deconfig", None)
    assert parse_line("udhcpc: started, v1.35.0") is None


def test_vendor_urcs_say_lost() -> None:
    assert parse_lost_line("huawei", '^NDISSTAT: 0,33,,"IPV4"')
    assert not parse_lost_line("huawei", '^NDISSTAT: 1,,,"IPV4"')
    assert parse_lost_line("zte", "+ZECMCALL: DISCONNECT")
    assert parse_lost_line("generic", "+CGEV: NW DEACT 1")


@pytest.mark.root
@pytest.mark.timeout(60)
def test_refused_bearer_is_a_fault_in_its_own_words(tmp_path: Path) -> None:
    async def go() -> None:
        refused = {"cme": {'AT^NDISDUP=1,1,"INTERNET"': 30}}  # +CME ERROR: 30, no service
        async with Rig(tmp_path, refused, bearer="huawei") as rig:
            await rig.wait_for(lambda: "bearer command failed" in
                               (rig.driver.state.last_error or ""), 20)
            assert "pppd" not in (rig.driver.state.last_error or "")
            assert rig.address() is None and not rig.ctl(op="get")["bearer_up"]
            assert rig.driver.state.ladder_counts["redial"] >= 1 or \
                rig.driver.state.pending_rung is not None

    run(go())
