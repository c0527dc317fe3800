"""The dyndns2 protocol (`GET /nic/update?hostname=NAME&myip=ADDR`, HTTP basic auth), spoken by
Dyn, No-IP, Google Domains' successors, ddclient's `protocol=dyndns2` servers and many more.

Its answers and the client rules follow Dyn's "Return codes" page (help.dyn.com/return-codes):
`good` and `nochg` are success; every other code is fatal "until the user has taken some
sort of corrective action", so the client must stop rather than retry; `nochg` repeated is
treated as abuse, so we never send an update whose address has not changed (the updater's
rule); `911` and `dnserr` are the provider's own trouble, and the client waits at least
30 minutes before trying again."""

from __future__ import annotations

import ipaddress
import logging

from failberry import __version__
from failberry.config import Dyndns2Config, Secret
from failberry.dyndns.base import DyndnsError, Record, Retry, UpdateResult
from failberry.dyndns.http import HttpClient, HttpFailed, HttpReply

LOG = logging.getLogger(__name__)

KIND = "dyndns2"

# Dyn asks clients to name themselves ("company-device-version"); never a browser string.
USER_AGENT = f"failberry-dyndns-{__version__}"

# Dyn: "wait at least 30 minutes" after 911/dnserr.
PROVIDER_TROUBLE_WAIT = 1800.0

# Fatal codes: stop until the config changes. The text says what the user should fix.
FATAL = {
    "badauth": "the username or password is wrong (dyndns.dyndns2.username/password)",
    "!donator": "the account does not allow this update (a paid feature?)",
    "notfqdn": "the provider says the name is not a fully qualified domain name (dyndns.name)",
    "nohost": "the name does not exist in this account (dyndns.name)",
    "numhost": "too many names, or a round-robin name, in one update",
    "abuse": "the provider has blocked this name for abuse; unblock it on the provider's site",
    "badagent": "the provider refused our user agent or request method",
    "!yours": "the name belongs to another account (dyndns.name)",
    "!active": "the name is not active on the provider",
    "badsys": "the provider does not support this system parameter",
    "nofqdn": "no valid name was sent (dyndns.name)",
    "unauth": "the username may not update this name",
    "blocked": "the provider has blocked this client",
    "notdyn": "the name is not marked as dynamic at the provider",
}
TROUBLE = {
    "911": "the provider reports a problem or maintenance on its side",
    "dnserr": "the provider reports a DNS error on its side",
}


def interpret(reply: HttpReply, record: Record, address: str) -> UpdateResult:
    """Turn one /nic/update answer into a result, or a DyndnsError with the right `retry`."""
    what = str(record)
    if reply.status == 401:
        raise DyndnsError(KIND, what, f"HTTP 401: {FATAL['badauth']}", retry=Retry.NEVER)
    if reply.status >= 500:
        raise DyndnsError(KIND, what, f"HTTP {reply.status} from the provider")
    lines = reply.text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    code, _, rest = first.partition(" ")
    shown = _printable(first)
    if reply.status != 200 and code not in FATAL and code not in TROUBLE:
        raise DyndnsError(KIND, what, f"HTTP {reply.status}: {shown!r}")
    if code in ("good", "nochg"):
        answered = rest.strip() or address
        try:
            ipaddress.ip_address(answered)
        except ValueError:
            answered = address
        if answered == "127.0.0.1" and address != "127.0.0.1":
            # Dyn's signal for a refused user agent: "good 127.0.0.1" when we sent another.
            raise DyndnsError(KIND, what, f"'good 127.0.0.1': {FATAL['badagent']}",
                              retry=Retry.NEVER)
        return UpdateResult(address=answered, changed=code == "good", detail=shown)
    if code in FATAL:
        raise DyndnsError(KIND, what, f"{code!r}: {FATAL[code]}", retry=Retry.NEVER)
    if code in TROUBLE:
        raise DyndnsError(KIND, what, f"{code!r}: {TROUBLE[code]}; waiting at least "
                          f"{PROVIDER_TROUBLE_WAIT / 60:g} min", retry=Retry.LATER,
                          retry_after=PROVIDER_TROUBLE_WAIT)
    raise DyndnsError(KIND, what, f"unexpected answer {shown!r}")


def _printable(text: str, limit: int = 80) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


class Dyndns2Provider:
    """Updates one name through a dyndns2 server at `url` (the full /nic/update URL)."""

    kind = KIND

    def __init__(self, url: str, username: str, password: Secret, http: HttpClient, *,
                 timeout: float = 10.0, user_agent: str = USER_AGENT) -> None:
        self.url = url
        self.username = username
        self._password = password
        self.http = http
        self.timeout = timeout
        self.user_agent = user_agent

    @classmethod
    def from_config(cls, cfg: Dyndns2Config, http: HttpClient,
                    timeout: float = 10.0) -> Dyndns2Provider:
        """From `[dyndns.dyndns2]` (validated: url, username and password are set)."""
        assert cfg.password is not None
        return cls(cfg.url, cfg.username, cfg.password, http, timeout=timeout)

    def update(self, record: Record, address: str, source: str | None) -> UpdateResult:
        """One GET /nic/update from `source`."""
        params = {"hostname": record.name, "myip": address}
        try:
            reply = self.http.request("GET", self.url, source=source, timeout=self.timeout,
                                      params=params,
                                      auth=(self.username, self._password.reveal()),
                                      headers={"User-Agent": self.user_agent})
        except HttpFailed as e:
            raise DyndnsError(KIND, str(record), e.reason) from None
        return interpret(reply, record, address)
