"""HiLink end to end: a fake E3372h web API with its session/token handshake and dnsmasq in
a namespace behind a veth; the real driver, machine and part with the HiLink backend. From
"device added" to a DHCP lease on the stick's interface with the data switch on; a stale
token and an expired session are recovered by a new handshake; the API hanging is climbed
past the API's own rungs (data switch, reboot through the API) to the USB rebind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from failberry.modem.hilink import HilinkError, dbm, parse, request_xml
from failberry.modem.machine import Phase
from modem_fakes.hilink_rig import HilinkRig


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def in_pool(address: str | None) -> bool:
    return address is not None and address.startswith("192.168.8.") and \
        100 <= int(address.rsplit(".", 1)[1]) <= 110


@pytest.mark.root
@pytest.mark.timeout(90)
def test_device_added_to_lease_with_status(tmp_path: Path) -> None:
    async def go() -> None:
        async with HilinkRig(tmp_path) as rig:
            await rig.wait_for(lambda: rig.phase is Phase.CONNECTED, 30)
            s = rig.driver.state
            assert s.interface == "eth1" and in_pool(s.address)
            assert rig.address() == s.address and await asyncio.to_thread(rig.ping)
            got = rig.ctl(op="get")
            assert got["dataswitch"] and got["dataswitch_on"] == 1
            await rig.wait_for(
                lambda: rig.status.parts["modem"].detail.get("operator") is not None)
            d = rig.status.parts["modem"].detail
            assert (d["data_path"], d["signal_dbm"], d["operator"], d["access_tech"],
                    d["registration"], d["model"]) == \
                ("hilink", -67, "Vodafone UK", "LTE", "home", "E3372h-320")
            assert d["private_address"] is True  # behind the stick's own NAT

            # A stale token: 125003, a new handshake, the POST repeated once.
            rig.api.token = "stale"
            assert await rig.api.post("/api/dialup/mobile-dataswitch",
                                      {"dataswitch": "1"}) == {"": "OK"}
            # The stick forgot every session (its idle timeout): 125002, the same.
            rig.ctl(op="expire")
            assert (await rig.api.get("/api/device/signal"))["rssi"] == "-67dBm"
            got = rig.ctl(op="get")
            assert got["bad_token"] == 1 and got["bad_session"] >= 1
            assert rig.phase is Phase.CONNECTED

    run(go())


@pytest.mark.root
@pytest.mark.timeout(120)
def test_api_hang_is_climbed_to_usb_rebind(tmp_path: Path) -> None:
    async def go() -> None:
        async with HilinkRig(tmp_path) as rig:
            await rig.wait_for(lambda: rig.phase is Phase.CONNECTED, 30)
            rig.ctl(op="hang")
            unbind = rig.sysroot / "bus" / "usb" / "drivers" / "usb" / "unbind"
            await rig.wait_for(lambda: unbind.read_text() == "1-1.2", 60)
            rig.ctl(op="revive")  # the rebind re-enumerated the stick: it boots afresh
            await rig.wait_for(lambda: rig.phase is Phase.CONNECTED, 30)
            assert rig.driver.state.ladder_counts == {
                "redial": 1, "modem_reset": 1, "usb_rebind": 1, "port_power": 0, "reboot": 0}
            assert "API" in (rig.driver.state.last_error or "") or \
                "stick" in (rig.driver.state.last_error or "")
            assert in_pool(rig.driver.state.address) and rig.recorder.reasons == []
            assert rig.ctl(op="get")["dataswitch"]

    run(go())


def test_api_replies_and_errors() -> None:
    assert parse("<response><SesInfo>SessionID=ab</SesInfo><TokInfo>t1</TokInfo>"
                 "</response>") == {"SesInfo": "SessionID=ab", "TokInfo": "t1"}
    assert parse('<?xml version="1.0"?>\n<response>OK</response>') == {"": "OK"}
    with pytest.raises(HilinkError, match="125003") as info:
        parse("<error><code>125003</code><message></message></error>")
    assert info.value.code == 125003
    with pytest.raises(HilinkError, match="unreadable"):
        parse("<html>login</html")
    assert request_xml({"dataswitch": "1"}).endswith(
        "<request><dataswitch>1</dataswitch></request>")
    assert dbm("-95dBm") == -95 and dbm("&gt;=-51dBm") == -51 and dbm(None) is None
