"""dyndns2 against the test's own /nic/update server on loopback: each answer code in turn,
and failberry's reaction to it (publish, stop until the config changes, or stay away)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from dyndns_http import Seen, Server, serving
from failberry.config import Secret
from failberry.dyndns.base import DyndnsError, Record, Retry
from failberry.dyndns.dyndns2 import PROVIDER_TROUBLE_WAIT, Dyndns2Provider
from failberry.dyndns.http import RequestsClient
from failberry.dyndns.updater import Timing, Updater

pytestmark = pytest.mark.timeout(60)

USER = "pi-user"
PASSWORD = "s3cret-Pa55word-for-dyndns2"
NAME = "home.example.test"


def provider_handler(script: list[tuple[int, str]]) -> Callable[[Seen, dict[str, str]],
                                                                  tuple[int, str]]:
    """A dyndns2 provider: checks auth and agent like a real one, answers the scripted
    replies first (`{ip}` is filled in), then good/nochg by its own zone."""

    def handle(seen: Seen, zone: dict[str, str]) -> tuple[int, str]:
        auth = seen.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        ip = seen.query.get("myip", seen.client)
        host = seen.query.get("hostname", "")
        if seen.path != "/nic/update" or auth != expected:
            return 401, "badauth"
        if not seen.headers.get("user-agent", "").startswith("failberry-dyndns-"):
            return 200, "badagent"
        if script:
            status, text = script.pop(0)
            if text.startswith(("good", "nochg")):
                zone[host] = ip
            return status, text.format(ip=ip)
        code = "nochg" if zone.get(host) == ip else "good"
        zone[host] = ip
        return 200, f"{code} {ip}"

    return handle


def make_updater(server: Server, password: str = PASSWORD) -> Updater:
    provider = Dyndns2Provider(server.url, USER, Secret(password), RequestsClient(),
                               timeout=5.0)
    return Updater(provider, server, [Record(NAME, "A", 60)],
                   timing=Timing(check_interval=600, retry_initial=0.01, retry_max=0.05),
                   rng=random.Random(1))


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def drive(updater: Updater, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(updater.run())
        try:
            await body()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())


FATAL_CODES = ["badauth", "!donator", "notfqdn", "nohost", "numhost", "abuse", "badagent",
               "!yours"]


@pytest.mark.parametrize("code", FATAL_CODES)
def test_fatal_codes_stop_until_the_config_changes(code: str) -> None:
    with serving(provider_handler([(200, code)])) as server:
        up = make_updater(server)
        st = up.states["A"]

        async def body() -> None:
            up.set_address("A", "127.0.0.2", "127.0.0.2")
            await until(lambda: st.blocked is not None)
            up.set_address("A", "127.0.0.3", "127.0.0.3")  # a new address does not unblock
            await asyncio.sleep(0.3)
            assert len(server.seen) == 1
            assert st.last_retry is Retry.NEVER and repr(code) in (st.last_error or "")
            assert up.view()[0]["state"] == "blocked"
            up.reset()  # the config changed: try again, and the provider now takes it
            await until(lambda: st.sent == "127.0.0.3")

        drive(up, body)
        assert len(server.seen) == 2
        assert server.zone[NAME] == "127.0.0.3"


@pytest.mark.parametrize("code", ["911", "dnserr"])
def test_provider_trouble_backs_off_at_least_30_minutes(code: str) -> None:
    with serving(provider_handler([(200, code)])) as server:
        up = make_updater(server)
        st = up.states["A"]

        async def body() -> None:
            up.set_address("A", "127.0.0.2", "127.0.0.2")
            await until(lambda: st.next_retry is not None)
            # Even a new address must wait: the provider asked us to stay away.
            up.set_address("A", "127.0.0.3", "127.0.0.3")
            await asyncio.sleep(0.3)

        drive(up, body)
        assert len(server.seen) == 1
        assert st.blocked is None and st.last_retry is Retry.LATER
        assert st.next_retry is not None
        assert st.next_retry - time.monotonic() > PROVIDER_TROUBLE_WAIT - 60
        assert up.view()[0]["state"] == "retrying"


@pytest.mark.parametrize("first", [(500, "oops"), (200, "wat"), (503, "")])
def test_transient_failures_retry_with_backoff_then_publish(first: tuple[int, str]) -> None:
    with serving(provider_handler([first])) as server:
        up = make_updater(server)
        st = up.states["A"]

        async def body() -> None:
            up.set_address("A", "127.0.0.2", "127.0.0.2")
            await until(lambda: st.sent == "127.0.0.2")

        drive(up, body)
        assert len(server.seen) == 2
        assert st.failures == 0 and st.last_error is None and st.updates == 1
        assert server.zone[NAME] == "127.0.0.2"


def test_good_publishes_and_an_unchanged_address_is_never_sent_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serving(provider_handler([])) as server:
        up = make_updater(server)
        st = up.states["A"]

        async def body() -> None:
            up.set_address("A", "127.0.0.2", "127.0.0.2")
            await until(lambda: st.sent == "127.0.0.2")
            for _ in range(5):
                up.set_address("A", "127.0.0.2", "127.0.0.2")
            await asyncio.sleep(0.3)
            up.set_address("A", "127.0.0.4", "127.0.0.4")
            await until(lambda: st.sent == "127.0.0.4")

        drive(up, body)
        assert len(server.seen) == 2
        first = server.seen[0]
        assert first.method == "GET"
        assert first.query == {"hostname": NAME, "myip": "127.0.0.2"}
        # Sent from the published address: the provider may take the address from the source.
        assert first.client == "127.0.0.2" and server.seen[1].client == "127.0.0.4"
        assert server.zone[NAME] == "127.0.0.4"
        assert up.view()[0]["state"] == "ok"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert PASSWORD not in caplog.text and token not in caplog.text
    assert PASSWORD not in json.dumps(up.view())


def test_nochg_at_start_counts_as_success() -> None:
    """`nochg` (the record already held it, e.g. after a restart) is success, not an error."""
    with serving(provider_handler([(200, "nochg {ip}")])) as server:
        up = make_updater(server)
        st = up.states["A"]

        async def body() -> None:
            up.set_address("A", "127.0.0.2", "127.0.0.2")
            await until(lambda: st.sent == "127.0.0.2")

        drive(up, body)
        assert len(server.seen) == 1 and st.blocked is None and st.last_error is None


def test_good_127_0_0_1_means_the_agent_was_refused() -> None:
    with serving(provider_handler([(200, "good 127.0.0.1")])) as server:
        up = make_updater(server)
        st = up.states["A"]

        async def body() -> None:
            up.set_address("A", "127.0.0.2", "127.0.0.2")
            await until(lambda: st.blocked is not None)

        drive(up, body)
        assert "user agent" in (st.blocked or "")


def test_wrong_password_gets_badauth_from_the_server() -> None:
    with serving(provider_handler([])) as server:
        up = make_updater(server, password="not-the-password")
        st = up.states["A"]

        async def body() -> None:
            up.set_address("A", "127.0.0.2", "127.0.0.2")
            await until(lambda: st.blocked is not None)
            await asyncio.sleep(0.2)

        drive(up, body)
        assert len(server.seen) == 1
        assert "HTTP 401" in (st.blocked or "") and "password" in (st.blocked or "")
        assert "not-the-password" not in (st.blocked or "")


def test_no_server_is_a_transient_error_naming_the_url() -> None:
    with serving(provider_handler([])) as server:
        url = server.url
    provider = Dyndns2Provider(url, USER, Secret(PASSWORD), RequestsClient(), timeout=2.0)
    with pytest.raises(Exception) as info:
        provider.update(Record(NAME, "A", 60), "127.0.0.2", "127.0.0.2")
    err = info.value
    assert getattr(err, "retry", None) is Retry.SOON
    assert "ConnectionError" in str(err) and PASSWORD not in str(err)


class FlakyLookup:
    """The provider's zone as verifier, failing its first `fail` lookups (no route yet)."""

    def __init__(self, server: Server, fail: int) -> None:
        self.server = server
        self.fail = fail

    def lookup(self, record: Record) -> frozenset[str]:
        if self.fail > 0:
            self.fail -= 1
            raise DyndnsError("verify", str(record), "no authoritative answer: timeout")
        return self.server.lookup(record)


def test_restarts_send_no_nochg(tmp_path: Path) -> None:
    """Issue 12: three restarts of the part with the record already right send nothing (a
    dyndns2 provider counts repeated `nochg` as abuse). The address arrives after the part
    started, as the network part publishes it; one restart's first check gets no answer."""
    from failberry.bus import Bus, PublishedAddressChanged
    from failberry.config import parse
    from failberry.dyndns.part import DyndnsPart
    from failberry.dyndns.persist import StateFile
    from failberry.status import Status

    cfg = parse('[modem]\napn = "internet"\n[dyndns]\nprovider = "dyndns2"\n'
                f'name = "{NAME}"\n[dyndns.dyndns2]\nurl = "http://127.0.0.1:1/nic/update"\n'
                f'username = "{USER}"\npassword = "{PASSWORD}"\n')

    def part(server: Server, verifier: object) -> tuple[DyndnsPart, Bus]:
        updater = make_updater(server)
        updater.verifier = verifier  # type: ignore[assignment]
        bus = Bus()
        return DyndnsPart(updater, Status(), bus, provider="dyndns2",
                          state=StateFile(tmp_path / "state.json", cfg.dyndns)), bus

    with serving(provider_handler([])) as server:
        for i, fail in enumerate((0, 0, 1, 0)):
            p, bus = part(server, FlakyLookup(server, fail))

            async def body(p: DyndnsPart = p, bus: Bus = bus) -> None:
                task = asyncio.create_task(p.run())
                try:
                    await asyncio.sleep(0.2)
                    bus.publish(PublishedAddressChanged("127.0.0.20", "wired"))
                    st = p.updater.states["A"]
                    await until(lambda: st.sent == "127.0.0.20" and not st.in_flight)
                    await asyncio.sleep(0.1)
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

            asyncio.run(body())
            assert len(server.seen) == 1, (i, [s.query for s in server.seen])
