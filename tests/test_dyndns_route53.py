"""route53 through its API: the SigV4 signer against AWS's published test-suite vectors, and a
signed UPSERT checked by a local stand-in endpoint that re-derives the signature from the
request exactly as it arrived on the wire."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from dyndns_http import Handler, Seen, serving
from failberry.config import Secret
from failberry.dyndns.base import DyndnsError, Record, Retry
from failberry.dyndns.http import RequestsClient
from failberry.dyndns.route53 import NS, Route53Provider, sign

pytestmark = pytest.mark.timeout(60)

# AWS SigV4 test suite: credentials, date and expected signatures as published by AWS.
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
DATE = "20150830T123600Z"
SUITE_HEADERS = {"Host": "example.amazonaws.com", "X-Amz-Date": DATE}


@pytest.mark.parametrize(("method", "signature"), [
    ("GET", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),   # get-vanilla
    ("POST", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),  # post-vanilla
])
def test_signer_matches_the_aws_test_suite(method: str, signature: str) -> None:
    auth = sign(method, "https://example.amazonaws.com/", SUITE_HEADERS, b"", access_key=AKID,
                secret_key=SECRET, region="us-east-1", service="service", amz_date=DATE)
    assert auth == (f"AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/"
                    f"aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}")


def test_signer_sorts_the_query() -> None:
    # get-vanilla-query-order-key-case
    auth = sign("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                SUITE_HEADERS, b"", access_key=AKID, secret_key=SECRET, region="us-east-1",
                service="service", amz_date=DATE)
    assert auth.endswith("b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")


def endpoint(secret: str) -> Handler:
    """Route53 as far as this request goes: check the path, the XML, and the signature."""

    def handle(seen: Seen, zone: dict[str, str]) -> tuple[int, str]:
        auth = seen.headers.get("authorization", "")
        signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        headers = {h: seen.headers[h] for h in signed}
        url = f"http://{seen.headers['host']}{seen.path}"
        want = sign(seen.method, url, headers, seen.body, access_key=AKID, secret_key=secret,
                    region="us-east-1", service="route53", amz_date=seen.headers["x-amz-date"])
        if auth != want:
            return 403, ('<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
                         "<Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>"
                         "The request signature we calculated does not match</Message></Error>"
                         "</ErrorResponse>")
        if seen.path != "/2013-04-01/hostedzone/Z0123456789ABC/rrset/":
            return 404, ("<ErrorResponse><Error><Code>NoSuchHostedZone</Code></Error>"
                         "</ErrorResponse>")
        root = ET.fromstring(seen.body)
        q = f"{{{NS}}}"
        rrset = root.find(f"{q}ChangeBatch/{q}Changes/{q}Change/{q}ResourceRecordSet")
        action = root.find(f"{q}ChangeBatch/{q}Changes/{q}Change/{q}Action")
        assert rrset is not None and action is not None and action.text == "UPSERT"
        name = rrset.findtext(f"{q}Name") or ""
        zone[name] = rrset.findtext(f"{q}ResourceRecords/{q}ResourceRecord/{q}Value") or ""
        zone["ttl"] = rrset.findtext(f"{q}TTL") or ""
        return 200, (f'<ChangeResourceRecordSetsResponse xmlns="{NS}"><ChangeInfo>'
                     "<Id>/change/C1</Id><Status>PENDING</Status></ChangeInfo>"
                     "</ChangeResourceRecordSetsResponse>")

    return handle


def provider(url: str, secret: str) -> Route53Provider:
    return Route53Provider("/hostedzone/Z0123456789ABC", AKID, Secret(secret), RequestsClient(),
                           endpoint=url, timeout=5, clock=lambda: 1440938160.0)


def test_signed_upsert_is_accepted_and_sets_the_record() -> None:
    with serving(endpoint(SECRET)) as server:
        base = f"http://127.0.0.1:{server.port}"
        result = provider(base, SECRET).update(Record("home.example.test", "A", 60),
                                               "127.0.0.2", "127.0.0.2")
    assert result.address == "127.0.0.2" and result.changed
    assert server.zone["home.example.test."] == "127.0.0.2" and server.zone["ttl"] == "60"
    seen = server.seen[0]
    assert seen.client == "127.0.0.2" and seen.headers["x-amz-date"] == DATE
    assert seen.headers["content-type"] == "text/xml"
    assert SECRET not in seen.body.decode()


def test_wrong_secret_is_fatal_and_named() -> None:
    with serving(endpoint(SECRET)) as server:
        base = f"http://127.0.0.1:{server.port}"
        with pytest.raises(DyndnsError) as info:
            provider(base, "not-the-secret").update(Record("home.example.test", "A", 60),
                                                    "127.0.0.2", None)
    assert info.value.retry is Retry.NEVER
    assert "SignatureDoesNotMatch" in str(info.value) and "secret_access_key" in str(info.value)
    assert "not-the-secret" not in str(info.value)


@pytest.mark.parametrize(("status", "body", "retry"), [
    (400, "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message>"
          "</Error></ErrorResponse>", Retry.SOON),
    (400, "<ErrorResponse><Error><Code>PriorRequestNotComplete</Code></Error></ErrorResponse>",
     Retry.SOON),
    (400, f'<InvalidChangeBatch xmlns="{NS}"><Messages><Message>bad</Message></Messages>'
          "</InvalidChangeBatch>", Retry.NEVER),
    (403, "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>",
     Retry.NEVER),
    (503, "", Retry.SOON),
])
def test_error_answers(status: int, body: str, retry: Retry) -> None:
    def handle(seen: Seen, zone: dict[str, str]) -> tuple[int, str]:
        return status, body

    with serving(handle) as server:
        base = f"http://127.0.0.1:{server.port}"
        with pytest.raises(DyndnsError) as info:
            provider(base, SECRET).update(Record("home.example.test", "A", 60), "127.0.0.2",
                                          None)
    assert info.value.retry is retry
