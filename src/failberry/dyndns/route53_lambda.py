"""The request format of awslabs' "route53-dynamic-dns-with-lambda" (the current, Lambda
Function URL version), so users of that setup can point failberry at their function.

From that repository (awslabs/route53-dynamic-dns-with-lambda: `invocation.md`,
`lambda/index.py`, `dyndns.sh`):
- every call is `POST` to the function URL with a JSON body;
- get mode, `{"execution_mode": "get"}`, answers `{"return_status": "success",
  "return_message": "<the caller's address>"}`: the function reflects the request's source;
- set mode, `{"execution_mode": "set", "ddns_hostname": NAME, "validation_hash": HASH}`, where
  HASH is the hex SHA-256 of the caller's address, the hostname and the shared secret
  concatenated in that order (`echo -n "$ip$host$secret" | shasum -a 256`); the function
  recomputes it from the request's *source* address and sets an `A` record to that source.
  201: updated; 200: "Your IP address matches the current Route53 DNS record."; 401:
  "Validation hashes do not match."; 403: the hostname has no configuration in DynamoDB;
  400: a malformed hash; 500/501/502: Route53 or the function failed.

Because the function publishes the source address, we first ask it (get mode, from the uplink
we publish) what it sees, and hash that: behind carrier-grade NAT the world sees another
address than the uplink's own, and that is the one worth publishing."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from typing import Any

from failberry.config import Route53LambdaConfig, Secret
from failberry.dyndns.base import DyndnsError, Record, Retry, UpdateResult
from failberry.dyndns.http import HttpClient, HttpFailed, HttpReply

LOG = logging.getLogger(__name__)

KIND = "route53-lambda"


def validation_hash(address: str, hostname: str, shared_secret: str) -> str:
    """The project's token: hex sha256 of address + hostname + shared secret."""
    return hashlib.sha256((address + hostname + shared_secret).encode("utf-8")).hexdigest()


def get_body() -> dict[str, Any]:
    """The JSON of a get-mode request."""
    return {"execution_mode": "get"}


def set_body(hostname: str, token: str) -> dict[str, Any]:
    """The JSON of a set-mode request."""
    return {"execution_mode": "set", "ddns_hostname": hostname, "validation_hash": token}


def _decode(reply: HttpReply) -> dict[str, Any]:
    try:
        data = json.loads(reply.text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class Route53LambdaProvider:
    """Publishes the A record through the function at `url`."""

    kind = KIND

    def __init__(self, url: str, shared_secret: Secret, http: HttpClient, *,
                 timeout: float = 10.0) -> None:
        self.url = url
        self._secret = shared_secret
        self.http = http
        self.timeout = timeout

    @classmethod
    def from_config(cls, cfg: Route53LambdaConfig, http: HttpClient,
                    timeout: float = 10.0) -> Route53LambdaProvider:
        """From `[dyndns.route53-lambda]` (validated: url and shared_secret are set)."""
        assert cfg.shared_secret is not None
        return cls(cfg.url, cfg.shared_secret, http, timeout=timeout)

    def _post(self, record: Record, body: dict[str, Any], source: str | None) -> HttpReply:
        try:
            return self.http.request("POST", self.url, source=source, timeout=self.timeout,
                                     json=body)
        except HttpFailed as e:
            raise DyndnsError(KIND, str(record), e.reason) from None

    def seen_address(self, record: Record, source: str | None) -> str:
        """Get mode: the address the function sees our request coming from."""
        reply = self._post(record, get_body(), source)
        data = _decode(reply)
        seen = str(data.get("return_message", ""))
        if reply.status != 200 or data.get("return_status") != "success":
            raise DyndnsError(KIND, str(record), f"get mode answered HTTP {reply.status}: "
                              f"{seen[:120]!r}", retry=_retry_for(reply.status))
        try:
            ipaddress.ip_address(seen)
        except ValueError:
            raise DyndnsError(KIND, str(record), f"get mode did not return an address: "
                              f"{seen[:120]!r}") from None
        return seen

    def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
        """Get mode to learn the source address the function sees, then set mode."""
        if record.rdtype != "A":
            raise DyndnsError(KIND, str(record), "the function only sets A records",
                              retry=Retry.NEVER)
        seen = self.seen_address(record, source)
        if seen != address:
            LOG.info("%s: the function sees us as %s, not %s (NAT on the uplink?); "
                     "it will publish %s", KIND, seen, address, seen)
        token = validation_hash(seen, record.name, self._secret.reveal())
        reply = self._post(record, set_body(record.name, token), source)
        data = _decode(reply)
        message = str(data.get("return_message", reply.text))[:200]
        if reply.status in (200, 201) and data.get("return_status") == "success":
            return UpdateResult(address=seen, changed=reply.status == 201, detail=message)
        reason = {
            401: "the function rejected the hash: the shared secret or the hostname differs "
                 "from its DynamoDB config (dyndns.route53-lambda.shared_secret, dyndns.name)",
            403: "the function has no config for this hostname (dyndns.name)",
            400: "the function rejected the request as malformed",
        }.get(reply.status, "")
        raise DyndnsError(KIND, str(record), f"set mode answered HTTP {reply.status}: "
                          f"{reason or repr(message)}", retry=_retry_for(reply.status))


def _retry_for(status: int) -> Retry:
    """4xx is ours to fix; everything else may pass."""
    return Retry.NEVER if 400 <= status < 500 and status != 429 else Retry.SOON
