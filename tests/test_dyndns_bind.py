"""Dynamic DNS against a real BIND 9: the supervisor part, configured from TOML, driven by bus
events, updating a zone on a loopback port with TSIG-signed RFC 2136 UPDATEs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import dns.query
import dns.tsigkeyring
import dns.update
import pytest

from dyndns_bind import KEY_NAME, ZONE, Named, free_udp_tcp_port, new_secret
from failberry.bus import AddressChanged, Bus, PublishedAddressChanged
from failberry.config import parse
from failberry.dyndns.part import DyndnsPart, build
from failberry.parts import Seams
from failberry.status import Status

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Named]:
    n = Named(tmp_path_factory.mktemp("named"))
    n.start()
    try:
        yield n
    finally:
        n.stop()


def config_text(named: Named, host: str, secret_file: Path, *, check: str = "10m",
                ipv6: bool = False, interface: str = "") -> str:
    return f"""
[modem]
apn = "internet"
[dyndns]
provider = "rfc2136"
name = "{host}.{ZONE}"
ttl = 30
check_interval = "{check}"
retry_initial = "10ms"
retry_max = "50ms"
ipv6 = {str(ipv6).lower()}
interface = "{interface}"
[dyndns.rfc2136]
server = "127.0.0.1"
port = {named.port}
zone = "{ZONE}"
tsig_key_name = "{KEY_NAME}"
tsig_secret_file = "{secret_file}"
"""


def make_part(named: Named, tmp_path: Path, host: str, secret: str,
              **kw: object) -> tuple[DyndnsPart, Status, Bus]:
    secret_file = tmp_path / "tsig.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    cfg = parse(config_text(named, host, secret_file, **kw))  # type: ignore[arg-type]
    status, bus = Status(), Bus()
    part = build(cfg, Seams(status, bus), state_path=tmp_path / "dyndns-state.json")
    return part, status, bus


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Wait for `pred` to hold; fail the test (not hang) if it does not in time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def answers(named: Named, host: str, rdtype: str, want: set[str]) -> Callable[[], Awaitable[bool]]:
    async def pred() -> bool:
        return await asyncio.to_thread(named.query, host, rdtype) == want
    return pred


async def running(part: DyndnsPart, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(part.run())
    try:
        await body()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_address_change_is_answered_by_bind(named: Named, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    part, status, bus = make_part(named, tmp_path, "home", named.secret, ipv6=True)
    st = part.updater.states["A"]

    async def body() -> None:
        bus.publish(PublishedAddressChanged("127.0.0.5", "mobile"))
        await until(answers(named, "home", "A", {"127.0.0.5"}))
        bus.publish(PublishedAddressChanged("127.0.0.6", "wired"))
        await until(answers(named, "home", "A", {"127.0.0.6"}))
        # A burst of changes: one update of the latest address, not one per event.
        before = st.attempts
        for i in range(10, 30):
            bus.publish(PublishedAddressChanged(f"127.0.0.{i}", "mobile"))
        await until(answers(named, "home", "A", {"127.0.0.29"}))
        await until(lambda: _true(st.sent == "127.0.0.29" and not st.in_flight))
        assert st.attempts - before <= 2, st.attempts - before
        bus.publish(PublishedAddressChanged("2001:db8::5", "wired", family=6))
        await until(answers(named, "home", "AAAA", {"2001:db8::5"}))
        await until(lambda: _true(part.updater.states["AAAA"].sent == "2001:db8::5"))
        part.report()

    asyncio.run(running(part, body))
    # The update left from the published address (the uplink's), as BIND saw it.
    assert "127.0.0.6#" in named.log_text()
    snap = status.snapshot()["parts"]["dyndns"]
    assert snap["state"] == "ok"
    assert snap["record"] == f"home.{ZONE} A"
    assert snap["published"] == "127.0.0.29"
    assert snap["last_success"] is not None and snap.get("last_error") is None
    assert snap.get("next_retry") is None
    assert [r["published"] for r in snap["records"]] == ["127.0.0.29", "2001:db8::5"]
    # The TSIG secret appears in no log line and no status field.
    assert named.secret not in caplog.text
    assert named.secret not in json.dumps(status.snapshot())
    assert "updating home.dyn.test A to 127.0.0.6" in caplog.text


async def _true(value: bool) -> bool:
    return value


def test_wrong_tsig_key_is_a_clear_error_without_retry_storm(
        named: Named, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = new_secret()
    part, status, bus = make_part(named, tmp_path, "wrongkey", wrong)
    st = part.updater.states["A"]
    rejected_before = named.log_text().count("TSIG fb-key: tsig verify failure (BADSIG)")

    async def body() -> None:
        bus.publish(PublishedAddressChanged("127.0.0.7", "mobile"))
        await until(lambda: _true(st.blocked is not None))
        # Give a storm every chance: retry_initial is 10ms, so 0.5s would hold dozens of tries,
        # and a new address must not unblock a key the server rejects.
        bus.publish(PublishedAddressChanged("127.0.0.8", "mobile"))
        await asyncio.sleep(0.5)
        part.report()

    asyncio.run(running(part, body))
    assert st.attempts == 1
    rejected = named.log_text().count("TSIG fb-key: tsig verify failure (BADSIG)")
    assert rejected - rejected_before == 1
    snap = status.snapshot()["parts"]["dyndns"]
    assert snap["state"] == "blocked"
    assert "BADSIG" in snap["last_error"] and "tsig_secret" in snap["last_error"]
    assert named.query("wrongkey", "A") == frozenset()
    assert wrong not in caplog.text and wrong not in json.dumps(status.snapshot())
    assert "not retrying until the config changes" in caplog.text


def test_periodic_check_repairs_drift(named: Named, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    part, _status, bus = make_part(named, tmp_path, "drift", named.secret, check="1s")
    st = part.updater.states["A"]

    def behind_our_back() -> None:
        keyring = dns.tsigkeyring.from_text({KEY_NAME: ("hmac-sha256", named.secret)})
        upd = dns.update.UpdateMessage(ZONE, keyring=keyring, keyname=KEY_NAME)
        upd.replace("drift", 30, "A", "192.0.2.99")
        dns.query.udp(upd, named.host, port=named.port, timeout=2)

    async def body() -> None:
        bus.publish(PublishedAddressChanged("127.0.0.9", "mobile"))
        await until(answers(named, "drift", "A", {"127.0.0.9"}))
        await until(lambda: _true(st.updates == 1 and not st.in_flight))
        await asyncio.to_thread(behind_our_back)
        assert await asyncio.to_thread(named.query, "drift", "A") == {"192.0.2.99"}
        await until(answers(named, "drift", "A", {"127.0.0.9"}))
        await until(lambda: _true(st.confirmed))

    asyncio.run(running(part, body))
    assert st.updates == 2
    assert "drifted: the authoritative servers answer 192.0.2.99, not 127.0.0.9" in caplog.text


def test_restart_with_record_already_right_sends_no_update(named: Named, tmp_path: Path) -> None:
    """Issue 12: after a restart the first check finds the record right: no needless update.
    As in the supervisor, the address arrives a while after the part started (the network
    part publishes it after its first reconcile), and three restarts in a row send nothing."""
    part, _s, bus = make_part(named, tmp_path, "again", named.secret)
    st = part.updater.states["A"]

    async def first() -> None:
        bus.publish(PublishedAddressChanged("127.0.0.11", "mobile"))
        await until(lambda: _true(st.updates == 1))

    asyncio.run(running(part, first))
    updates_seen = named.log_text().count("again.dyn.test")
    for _ in range(3):
        part2, status2, bus2 = make_part(named, tmp_path, "again", named.secret)

        async def second(part2: DyndnsPart = part2, bus2: Bus = bus2) -> None:
            st2 = part2.updater.states["A"]
            await asyncio.sleep(0.3)  # the part runs (and may check) before any address
            bus2.publish(PublishedAddressChanged("127.0.0.11", "mobile"))
            await until(lambda: _true(st2.confirmed))
            await asyncio.sleep(0.1)
            part2.report()

        asyncio.run(running(part2, second))
        st2 = part2.updater.states["A"]
        assert st2.attempts == 0 and st2.sent == "127.0.0.11"
        assert status2.snapshot()["parts"]["dyndns"]["state"] == "ok"
    # named logs every update it applies ("updating zone ... adding an RR at 'again...'").
    assert named.log_text().count("again.dyn.test") == updates_seen


def test_stale_check_error_is_cleared_by_a_successful_update(named: Named, tmp_path: Path) -> None:
    """Issue 15: checks that got no answer, then an update that worked: /status shows no
    error. The check goes to a port where nothing answers; the update to BIND."""
    from failberry.dyndns.verify import AuthoritativeVerifier

    part, status, bus = make_part(named, tmp_path, "stale", named.secret)
    part.updater.verifier = AuthoritativeVerifier([("127.0.0.1", free_udp_tcp_port())],
                                                  timeout=0.05)
    st = part.updater.states["A"]

    async def body() -> None:
        bus.publish(PublishedAddressChanged("127.0.0.16", "mobile"))
        await until(answers(named, "stale", "A", {"127.0.0.16"}))
        await until(lambda: _true(st.updates == 1 and not st.in_flight))
        part.report()

    asyncio.run(running(part, body))
    snap = status.snapshot()["parts"]["dyndns"]
    assert snap["state"] == "ok" and snap.get("last_error") is None, snap


def test_block_survives_a_restart_until_the_config_changes(named: Named, tmp_path: Path) -> None:
    wrong = new_secret()
    part, _s, bus = make_part(named, tmp_path, "restart", wrong)

    async def blocked() -> None:
        bus.publish(PublishedAddressChanged("127.0.0.12", "mobile"))
        await until(lambda: _true(part.updater.states["A"].blocked is not None))

    asyncio.run(running(part, blocked))
    state_file = tmp_path / "dyndns-state.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    assert wrong not in state_file.read_text()

    # Same config after a restart: still blocked, not one more doomed update.
    again, status, bus2 = make_part(named, tmp_path, "restart", wrong)

    async def still() -> None:
        bus2.publish(PublishedAddressChanged("127.0.0.12", "mobile"))
        await asyncio.sleep(0.3)
        again.report()

    asyncio.run(running(again, still))
    assert again.updater.states["A"].attempts == 0
    assert status.snapshot()["parts"]["dyndns"]["state"] == "blocked"

    # The admin fixes the secret: the block is gone and the record follows.
    fixed, _s3, bus3 = make_part(named, tmp_path, "restart", named.secret)

    async def works() -> None:
        bus3.publish(PublishedAddressChanged("127.0.0.12", "mobile"))
        await until(answers(named, "restart", "A", {"127.0.0.12"}))

    asyncio.run(running(fixed, works))


def test_follows_an_interface_when_configured(named: Named, tmp_path: Path) -> None:
    part, _s, bus = make_part(named, tmp_path, "iface", named.secret, interface="wwan0")

    async def body() -> None:
        bus.publish(PublishedAddressChanged("127.0.0.13", "wired"))  # not followed
        bus.publish(AddressChanged("eth0", "127.0.0.14/24"))  # another interface
        bus.publish(AddressChanged("wwan0", "fe80::1/64", family=6))  # link-local: never
        bus.publish(AddressChanged("wwan0", "127.0.0.15/32"))
        await until(answers(named, "iface", "A", {"127.0.0.15"}))

    asyncio.run(running(part, body))
    assert part.updater.states["A"].attempts == 1
