"""Carrier-grade NAT: a mobile address in 100.64.0.0/10 or a private range is said plainly in
/status and `failberry status`, and dynamic DNS does not publish it (logged once)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from failberry import config
from failberry.bus import Bus, PublishedAddressChanged
from failberry.dyndns.base import Record, UpdateResult
from failberry.dyndns.part import DyndnsPart
from failberry.dyndns.updater import Timing, Updater
from failberry.inbound import mobile_warning, not_public
from failberry.status import NetworkReport, Status, UplinkReport, report_network
from failberry.statuscmd import render
from failberry.web.health import HealthApp
from failberry.web.httpserver import HttpStats


@pytest.mark.parametrize("address,kind", [
    ("100.64.0.1", "a CGNAT address"), ("100.127.255.254", "a CGNAT address"),
    ("10.20.30.40", "a private address"), ("172.31.0.1", "a private address"),
    ("192.168.8.100", "a private address"), ("100.63.255.255", None), ("100.128.0.1", None),
    ("172.32.0.1", None), ("203.0.113.5", None), ("2001:db8::1", None), (None, None),
    ("", None)])
def test_not_public(address: str | None, kind: str | None) -> None:
    assert not_public(address) == kind


def doc_for(mobile: str | None) -> dict[str, object]:
    st = Status()
    report_network(st, "ok", NetworkReport(
        active_uplink="mobile",
        uplinks={"mobile": UplinkReport(True, "ok", "ppp0", True, mobile)},
        forwards={"udp/1194": {"packets_in": 3, "bytes_in": 2048, "packets_out": 2,
                               "bytes_out": 1024}}))
    cfg = config.parse('[modem]\napn = "internet"\n')
    return HealthApp(st, cfg, HttpStats()).document()


def test_status_and_status_command_say_so_plainly() -> None:
    doc = doc_for("100.72.1.2")
    assert doc["inbound_warning"] == (
        "inbound through the mobile link will not work: the operator gives a CGNAT address "
        "(100.72.1.2); ask for a public-IP APN")
    assert f"warning: {doc['inbound_warning']}" in render(doc)
    assert "forwards: udp/1194 in 2.0 KiB, out 1.0 KiB" in render(doc)
    public = doc_for("198.51.100.7")
    assert public.get("inbound_warning") is None
    assert not any(line.startswith("warning:") for line in render(public))
    assert mobile_warning("10.1.2.3") is not None and "private" in str(mobile_warning("10.1.2.3"))


class Recording:
    kind = "test"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
        self.sent.append(address)
        return UpdateResult(address, True)


class Nothing:
    def lookup(self, record: Record) -> frozenset[str]:
        return frozenset()


def test_dyndns_does_not_publish_a_cgnat_or_private_address(
        caplog: pytest.LogCaptureFixture) -> None:
    provider = Recording()

    async def scenario() -> None:
        bus = Bus()
        updater = Updater(provider, Nothing(), [Record("pi.example.org", "A", 60)],
                          timing=Timing(retry_initial=0.01, retry_max=0.02))
        part = DyndnsPart(updater, Status(), bus, provider="test", report_every=0.05)
        task = asyncio.create_task(part.run())
        try:
            for addr in ("100.64.9.9", "100.64.9.9", "10.0.0.5"):
                bus.publish(PublishedAddressChanged(addr, "mobile"))
                await asyncio.sleep(0.1)
            assert updater.states["A"].desired is None
            bus.publish(PublishedAddressChanged("198.51.100.7", "mobile"))
            for _ in range(100):
                if provider.sent:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="failberry.dyndns.part"):
        asyncio.run(scenario())
    assert provider.sent == ["198.51.100.7"]
    refused = [r.getMessage() for r in caplog.records if "not publishing" in r.getMessage()]
    assert len(refused) == 2  # once per address, not per event
    assert "100.64.9.9: it is a CGNAT address" in refused[0]


def test_mobile_warning_for_a_natted_public_address() -> None:
    assert mobile_warning("198.51.100.7", "198.51.100.7") is None
    assert mobile_warning("198.51.100.7", None) is None
    assert mobile_warning("198.51.100.7", "203.0.113.9") == (
        "inbound through the mobile link will not work: the operator NATs its address "
        "(198.51.100.7 is seen outside as 203.0.113.9); ask for a public-IP APN")


def test_public_address_fetch() -> None:
    import http.server
    import threading

    from failberry.errors import FailberryError
    from failberry.net.publicaddr import fetch

    answers = {"/ip": (200, b" 127.0.0.1\n"), "/junk": (200, b"<html>"), "/gone": (404, b"")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = answers[self.path]
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert fetch(f"{base}/ip", "127.0.0.1") == "127.0.0.1"
        with pytest.raises(FailberryError, match="did not answer an address"):
            fetch(f"{base}/junk", "127.0.0.1")
        with pytest.raises(FailberryError, match="answered 404"):
            fetch(f"{base}/gone", "127.0.0.1")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FailberryError, match="refused"):
        fetch(f"{base}/ip", "127.0.0.1", timeout=2)  # nobody listens any more
