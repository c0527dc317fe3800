"""route53-lambda: the request format of awslabs/route53-dynamic-dns-with-lambda, checked
against the hash and JSON that project documents (invocation.md), then spoken to a local
stand-in of its function that validates exactly as its lambda/index.py does."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from dyndns_http import Handler, Seen, json_body, serving
from failberry.config import Secret
from failberry.dyndns.base import DyndnsError, Record, Retry
from failberry.dyndns.http import RequestsClient
from failberry.dyndns.route53_lambda import (
    Route53LambdaProvider,
    get_body,
    set_body,
    validation_hash,
)

pytestmark = pytest.mark.timeout(60)

SECRET = "SuP3R_5eCR3T"
HOST = "www.example.com"
DOC_HASH = "0eb3fc760ddbd7dca1702ae359b8f990b8a145d719b9d1014da4aa866022dd70"


def test_hash_matches_the_documented_example() -> None:
    # invocation.md: `echo -n 11.12.13.14www.example.comSuP3R_5eCR3T | shasum -a 256`
    assert validation_hash("11.12.13.14", HOST, SECRET) == DOC_HASH


def test_bodies_match_the_documented_json() -> None:
    # invocation.md: get posts {"execution_mode": "get"}; set posts these three keys.
    assert json.dumps(get_body()) == '{"execution_mode": "get"}'
    assert set_body(HOST, DOC_HASH) == {"execution_mode": "set", "ddns_hostname": HOST,
                                        "validation_hash": DOC_HASH}


def function(config: dict[str, str]) -> Handler:
    """The function as lambda/index.py behaves: get reflects the source address; set checks
    sha256(source + hostname + secret), answers 200 if the record already holds the source,
    201 after setting it, 401/403/400 on bad input."""

    def handle(seen: Seen, zone: dict[str, str]) -> tuple[int, str]:
        body = json_body(seen)
        source = seen.client
        mode = body.get("execution_mode")
        if seen.method != "POST" or mode not in ("get", "set"):
            return 400, json.dumps({"return_status": "fail",
                                    "return_message": "You must pass mode=get or mode=set."})
        if mode == "get":
            return 200, json.dumps({"return_status": "success", "return_message": source})
        host = str(body.get("ddns_hostname", ""))
        if host not in config:
            return 403, json.dumps({"return_status": "fail", "return_message":
                                    f"There was an issue finding or reading {host}"})
        want = hashlib.sha256((source + host + config[host]).encode()).hexdigest()
        if body.get("validation_hash") != want:
            return 401, json.dumps({"return_status": "fail",
                                    "return_message": "Validation hashes do not match."})
        if zone.get(host) == source:
            return 200, json.dumps({"return_status": "success", "return_message":
                                    "Your IP address matches the current Route53 DNS record."})
        zone[host] = source
        return 201, json.dumps({"return_status": "success",
                                "return_message": f"{host} has been updated to {source}"})

    return handle


def test_set_publishes_the_address_the_function_sees(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serving(function({HOST: SECRET})) as server:
        p = Route53LambdaProvider(server.url, Secret(SECRET), RequestsClient(), timeout=5)
        rec = Record(HOST, "A", 60)
        first = p.update(rec, "127.0.0.2", "127.0.0.2")
        again = p.update(rec, "127.0.0.2", "127.0.0.2")
        # Behind NAT the function sees another source than our own address: it publishes
        # what it sees, and so do we.
        natted = p.update(rec, "10.64.0.9", "127.0.0.3")
    assert (first.address, first.changed) == ("127.0.0.2", True)
    assert (again.address, again.changed) == ("127.0.0.2", False)
    assert (natted.address, natted.changed) == ("127.0.0.3", True)
    assert server.zone[HOST] == "127.0.0.3"
    assert [json_body(s)["execution_mode"] for s in server.seen] == ["get", "set"] * 3
    assert all(s.method == "POST" and s.headers["content-type"] == "application/json"
               for s in server.seen)
    sent = json_body(server.seen[1])
    assert sent == set_body(HOST, validation_hash("127.0.0.2", HOST, SECRET))
    assert SECRET not in caplog.text


def test_wrong_secret_and_unknown_host_are_fatal() -> None:
    with serving(function({HOST: SECRET})) as server:
        wrong = Route53LambdaProvider(server.url, Secret("nope"), RequestsClient(), timeout=5)
        with pytest.raises(DyndnsError) as bad_secret:
            wrong.update(Record(HOST, "A", 60), "127.0.0.2", "127.0.0.2")
        right = Route53LambdaProvider(server.url, Secret(SECRET), RequestsClient(), timeout=5)
        with pytest.raises(DyndnsError) as unknown:
            right.update(Record("other.example.com", "A", 60), "127.0.0.2", "127.0.0.2")
        with pytest.raises(DyndnsError) as aaaa:
            right.update(Record(HOST, "AAAA", 60), "2001:db8::1", None)
    assert bad_secret.value.retry is Retry.NEVER and "HTTP 401" in str(bad_secret.value)
    assert "shared_secret" in str(bad_secret.value) and "nope" not in str(bad_secret.value)
    assert unknown.value.retry is Retry.NEVER and "HTTP 403" in str(unknown.value)
    assert aaaa.value.retry is Retry.NEVER
    assert HOST not in server.zone


def test_server_errors_are_transient() -> None:
    def broken(seen: Seen, zone: dict[str, str]) -> tuple[int, str]:
        if json_body(seen).get("execution_mode") == "get":
            return 200, json.dumps({"return_status": "success", "return_message": seen.client})
        return 502, "Internal Server Error"

    with serving(broken) as server:
        p = Route53LambdaProvider(server.url, Secret(SECRET), RequestsClient(), timeout=5)
        with pytest.raises(DyndnsError) as info:
            p.update(Record(HOST, "A", 60), "127.0.0.2", "127.0.0.2")
    assert info.value.retry is Retry.SOON and "HTTP 502" in str(info.value)
