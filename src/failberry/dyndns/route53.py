"""Route53 directly: one `ChangeResourceRecordSets` UPSERT, signed with AWS Signature Version 4.

No boto: a Pi image does not need 80 MB of SDK for one signed POST. The signer follows AWS's
"Signature Version 4 signing process" (canonical request, string to sign, the HMAC key chain)
and is pinned in the tests by AWS's published test-suite vectors (`get-vanilla`,
`post-vanilla`). Route53 is a global service: it is always signed for `us-east-1`."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

from failberry.config import Route53Config, Secret
from failberry.dyndns.base import DyndnsError, Record, Retry, UpdateResult
from failberry.dyndns.http import HttpClient, HttpFailed

LOG = logging.getLogger(__name__)

KIND = "route53"
ENDPOINT = "https://route53.amazonaws.com"
API = "2013-04-01"
NS = f"https://route53.amazonaws.com/doc/{API}/"
ALGORITHM = "AWS4-HMAC-SHA256"

# Error codes a retry can fix: throttling, a change still in progress, a clock not yet set.
_TRANSIENT = {"Throttling", "PriorRequestNotComplete", "RequestExpired", "ServiceUnavailable",
              "InternalFailure", "SignatureExpired"}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, *, access_key: str,
         secret_key: str, region: str, service: str, amz_date: str) -> str:
    """The `Authorization` header value for a request whose headers include `host` and
    `x-amz-date` (every header given is signed)."""
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe="/-_.~")
    pairs = [p.partition("=") for p in parts.query.split("&") if p]
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                     for k, _, v in sorted(pairs))
    canon = {k.lower().strip(): " ".join(v.split()) for k, v in headers.items()}
    signed = ";".join(sorted(canon))
    canonical = "\n".join([method, path, query,
                           "".join(f"{k}:{canon[k]}\n" for k in sorted(canon)), signed,
                           hashlib.sha256(body).hexdigest()])
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service),
                "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature}")


def change_batch(record: Record, address: str) -> bytes:
    """The ChangeResourceRecordSetsRequest XML that UPSERTs the record."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<ChangeResourceRecordSetsRequest xmlns="{NS}"><ChangeBatch>'
            f"<Comment>failberry dynamic DNS</Comment><Changes><Change><Action>UPSERT</Action>"
            f"<ResourceRecordSet><Name>{escape(record.name)}.</Name>"
            f"<Type>{record.rdtype}</Type><TTL>{record.ttl}</TTL><ResourceRecords>"
            f"<ResourceRecord><Value>{escape(address)}</Value></ResourceRecord>"
            f"</ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch>"
            f"</ChangeResourceRecordSetsRequest>").encode()


def error_code(text: str) -> tuple[str, str]:
    """(code, message) from Route53's error XML; ("", "") if it is not that."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return "", ""
    code = message = ""
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "Code" and not code:
            code = (el.text or "").strip()
        elif tag == "Message" and not message:
            message = (el.text or "").strip()
    if not code:
        code = root.tag.rsplit("}", 1)[-1]  # <InvalidChangeBatch><Messages>...
    return code, message


class Route53Provider:
    """UPSERTs the record in hosted zone `zone_id`."""

    kind = KIND

    def __init__(self, zone_id: str, access_key_id: str, secret_access_key: Secret,
                 http: HttpClient, *, endpoint: str = ENDPOINT, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.zone_id = zone_id.removeprefix("/hostedzone/")
        self.access_key_id = access_key_id
        self._secret = secret_access_key
        self.http = http
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.clock = clock

    @classmethod
    def from_config(cls, cfg: Route53Config, http: HttpClient,
                    timeout: float = 10.0) -> Route53Provider:
        """From `[dyndns.route53]` (validated: zone_id and the key pair are set)."""
        assert cfg.secret_access_key is not None
        return cls(cfg.zone_id, cfg.access_key_id, cfg.secret_access_key, http, timeout=timeout)

    def request(self, record: Record, address: str) -> tuple[str, dict[str, str], bytes]:
        """URL, headers (signed) and body of the UPSERT."""
        url = f"{self.endpoint}/{API}/hostedzone/{self.zone_id}/rrset/"
        body = change_batch(record, address)
        now = datetime.datetime.fromtimestamp(self.clock(), tz=datetime.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        headers = {"host": urlsplit(url).netloc, "x-amz-date": amz_date,
                   "content-type": "text/xml"}
        headers["authorization"] = sign(
            "POST", url, headers, body, access_key=self.access_key_id,
            secret_key=self._secret.reveal(), region="us-east-1", service="route53",
            amz_date=amz_date)
        return url, headers, body

    def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
        """One signed UPSERT from `source`."""
        url, headers, body = self.request(record, address)
        try:
            reply = self.http.request("POST", url, source=source, timeout=self.timeout,
                                      data=body, headers=headers)
        except HttpFailed as e:
            raise DyndnsError(KIND, str(record), e.reason) from None
        if reply.status == 200:
            return UpdateResult(address=address, changed=True, detail="ChangeInfo PENDING")
        code, message = error_code(reply.text)
        retry = Retry.SOON if reply.status >= 500 or code in _TRANSIENT else Retry.NEVER
        if code == "SignatureDoesNotMatch":
            message = "the secret access key is wrong (dyndns.route53.secret_access_key)"
        raise DyndnsError(KIND, str(record), f"HTTP {reply.status} {code}: {message[:200]}",
                          retry=retry)
