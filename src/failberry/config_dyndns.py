"""The `[dyndns]` tables of the config model: the provider and each provider's settings.
Part of `failberry.config`, which holds the whole model and re-exports these names."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from failberry import checks
from failberry.schema import Secret, opt, section
from failberry.schema import base64_text as _base64
from failberry.schema import duration as _duration
from failberry.schema import enum_of as _enum
from failberry.schema import int_range as _int_range
from failberry.schema import one_of as _one_of
from failberry.schema import optional_string as _optional_str
from failberry.schema import string as _str


class DnsProvider(enum.StrEnum):
    """Dynamic DNS providers."""

    NONE = "none"
    RFC2136 = "rfc2136"
    DYNDNS2 = "dyndns2"
    ROUTE53_LAMBDA = "route53-lambda"
    ROUTE53 = "route53"


@dataclass(frozen=True)
class Rfc2136Config:
    """`[dyndns.rfc2136]`: DNS UPDATE signed with TSIG."""

    server: str = opt("", _optional_str(checks.host))
    port: int = opt(53, _int_range(1, 65535))
    zone: str = opt("", _optional_str(checks.fqdn))
    tsig_key_name: str = opt("", _optional_str(checks.fqdn))
    tsig_algorithm: str = opt("hmac-sha256", _str(lambda s: _one_of(
        s, ("hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5"))))
    tsig_secret: Secret | None = opt(None, _str(_base64))


@dataclass(frozen=True)
class Dyndns2Config:
    """`[dyndns.dyndns2]`: the de-facto HTTP update protocol."""

    url: str = opt("", _optional_str(checks.http_url))
    username: str = opt("")
    password: Secret | None = opt(None, _str(lambda s: s))


@dataclass(frozen=True)
class Route53LambdaConfig:
    """`[dyndns.route53-lambda]`: awslabs' route53 dynamic DNS with Lambda."""

    url: str = opt("", _optional_str(checks.http_url))
    shared_secret: Secret | None = opt(None, _str(lambda s: s))


@dataclass(frozen=True)
class Route53Config:
    """`[dyndns.route53]`: the Route53 API directly."""

    zone_id: str = opt("")
    access_key_id: str = opt("")
    secret_access_key: Secret | None = opt(None, _str(lambda s: s))
    region: str = opt("us-east-1")


@dataclass(frozen=True)
class DyndnsConfig:
    """`[dyndns]`: publish the current address under a name."""

    provider: DnsProvider = opt(DnsProvider.NONE, _enum(DnsProvider))
    name: str = opt("", _optional_str(checks.fqdn))
    ttl: int = opt(60, _int_range(1, 86400))
    check_interval: float = opt(600.0, _duration(1, 86400))
    ipv6: bool = opt(False, doc="also publish an AAAA record from the uplink's IPv6 address")
    interface: str = opt("", _optional_str(checks.interface_name),
                         doc="follow this interface's address; empty: the active uplink's")
    retry_initial: float = opt(2.0, _duration(0.01, 3600))
    retry_max: float = opt(300.0, _duration(0.01, 86400))
    rfc2136: Rfc2136Config = section(Rfc2136Config)
    dyndns2: Dyndns2Config = section(Dyndns2Config)
    route53_lambda: Route53LambdaConfig = section(Route53LambdaConfig)
    route53: Route53Config = section(Route53Config)
