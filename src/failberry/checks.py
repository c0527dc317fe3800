"""Validators for config values. Each takes a raw TOML value and returns the clean value or
raises ValueError with a message a person can act on (the caller adds the key path)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import struct
import zoneinfo
from urllib.parse import urlsplit

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_DEB_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# TS 23.003 clause 9.1: APN labels are letters, digits and hyphens, separated by dots, at most
# 100 octets. Some operators also hand out APNs with underscores, so we accept those too. The
# set matters beyond tidiness: the APN is written into a chat script, so quotes, spaces and
# control characters must never reach it.
_APN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_DIAL = re.compile(r"^[0-9*#]{2,32}$")
_AT_COMMAND = re.compile(r"^AT[\x20-\x7e]{0,200}$", re.IGNORECASE)
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_CRYPT_HASH = re.compile(r"^\$(1|2[abxy]|5|6|y|gy|7)\$[./A-Za-z0-9$=,]+$")
_TZ = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def hostname_label(value: str) -> str:
    """A single RFC 1123 host name label (what /etc/hostname and mDNS `NAME.local` take)."""
    if not _LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid host name: use 1 to 63 letters, digits and hyphens, "
            "not starting or ending with a hyphen (RFC 1123)"
        )
    return value


def fqdn(value: str) -> str:
    """An RFC 1123 domain name (dots allowed, a trailing dot tolerated)."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            f"{value!r} is not a valid domain name: labels of letters, digits and hyphens "
            "separated by dots (RFC 1123)"
        )
    return name


def host(value: str) -> str:
    """An IP address or an RFC 1123 domain name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    try:
        return fqdn(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither an IP address nor a host name") from None


def interface_name(value: str) -> str:
    """A Linux interface name: 1 to 15 bytes, no `/`, whitespace or `:` (IFNAMSIZ is 16)."""
    size = len(value.encode())
    if size == 0 or size > 15:
        raise ValueError(f"{value!r} is not an interface name: it must be 1 to 15 bytes long")
    if value in (".", "..") or any(c in value for c in "/: \t\n") or not value.isprintable():
        raise ValueError(f"{value!r} is not an interface name: no '/', ':' or whitespace")
    return value


def ip_address(value: str) -> str:
    """An IPv4 or IPv6 address."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def interface_address(value: str) -> str:
    """An address with its prefix length, `192.168.1.2/24`, that is a usable host address."""
    if "/" not in value:
        raise ValueError(f"{value!r} needs a prefix length, like \"192.168.1.2/24\"")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address with a prefix length (CIDR)") from None
    net = iface.network
    if net.version == 4 and net.prefixlen < 31 and iface.ip in (net.network_address,
                                                                 net.broadcast_address):
        raise ValueError(
            f"{value!r} is the network or broadcast address of {net}; pick a host address"
        )
    return str(iface)


def port(value: int) -> int:
    """A TCP or UDP port, 1 to 65535."""
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a port: must be 1 to 65535")
    return value


def ssh_public_key(value: str) -> str:
    """An OpenSSH public key line: known type, decodable base64 whose embedded type matches."""
    parts = value.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("is not an SSH public key: expected \"TYPE BASE64 [COMMENT]\"")
    kind, blob = parts[0], parts[1]
    if kind == "ssh-dss":
        raise ValueError("DSA keys (ssh-dss) are refused by OpenSSH 9; use an ed25519 key")
    if kind not in SSH_KEY_TYPES:
        raise ValueError(f"unknown SSH key type {kind!r}; use one of: {', '.join(SSH_KEY_TYPES)}")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {kind} key's base64 does not decode") from None
    if len(raw) < 4:
        raise ValueError(f"the {kind} key is truncated")
    (length,) = struct.unpack(">I", raw[:4])
    embedded = raw[4 : 4 + length]
    if embedded != kind.encode():
        raise ValueError(
            f"the key says {kind!r} but its data holds {embedded[:40].decode(errors='replace')!r}"
        )
    if kind == "ssh-ed25519":
        rest = raw[4 + length :]
        if len(rest) < 4 or struct.unpack(">I", rest[:4])[0] != 32 or len(rest) != 36:
            raise ValueError("the ssh-ed25519 key is truncated or has the wrong length")
    return " ".join(parts)


def apn(value: str) -> str:
    """An access point name (3GPP TS 23.003 9.1)."""
    if not value:
        raise ValueError("must not be empty; your operator publishes it (e.g. \"internet\")")
    if len(value) > 100 or not _APN.match(value):
        raise ValueError(
            f"{value!r} is not an APN: letters, digits, '-' and '_' in labels separated by dots, "
            "at most 100 characters"
        )
    return value


def pin(value: str) -> str:
    """A SIM PIN: 4 to 8 digits (TS 31.101, 3GPP TS 22.030)."""
    if not (value.isascii() and value.isdigit() and 4 <= len(value) <= 8):
        raise ValueError("must be 4 to 8 digits")
    return value


def dial_string(value: str) -> str:
    """The number pppd's chat dials, `*99#` or `*99***1#`."""
    if not _DIAL.match(value):
        raise ValueError(f"{value!r} is not a dial string: digits, '*' and '#' only (\"*99#\")")
    return value


def at_command(value: str) -> str:
    """One AT command: starts with AT, printable ASCII, no line breaks or double quotes issue."""
    if not _AT_COMMAND.match(value):
        raise ValueError(f"{value!r} is not an AT command: must start with AT, printable ASCII")
    if "'" in value:
        # The command lands in a chat script inside single quotes.
        raise ValueError(f"{value!r}: single quotes cannot be passed through the chat script")
    return value


def username(value: str) -> str:
    """A POSIX login name; root is refused (root stays locked on the image)."""
    if not _USER.match(value):
        raise ValueError(
            f"{value!r} is not a user name: lowercase letters, digits, '_' and '-', at most 32"
        )
    if value == "root":
        raise ValueError("must not be root: root stays locked; name an admin user")
    return value


def crypt_hash(value: str) -> str:
    """A crypt(3) hash (`mkpasswd -m yescrypt`), never a plain password."""
    if not _CRYPT_HASH.match(value):
        raise ValueError(
            "is not a password hash; make one with `mkpasswd -m yescrypt` (never a plain password)"
        )
    return value


def _is_tzif(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"TZif"
    except OSError:  # absent, or a directory
        return False


def timezone(value: str) -> str:
    """An IANA time zone name such as `Europe/Berlin`."""
    if not _TZ.match(value):
        raise ValueError(f"{value!r} is not a time zone name such as \"Europe/Berlin\"")
    if value == "UTC":
        return value
    # The zone's file where the system keeps them (the name cannot leave that directory);
    # listing every zone instead walks the whole database: seconds at a Pi's boot.
    bases = [b for b in zoneinfo.TZPATH if os.path.isfile(os.path.join(b, "zone1970.tab"))]
    if bases:
        # As zoneinfo.available_timezones counts them: TZif files, not the posix/ and right/
        # copies nor posixrules.
        known = (value.split("/", maxsplit=1)[0] not in ("posix", "right", "posixrules")
                 and any(_is_tzif(os.path.join(b, value)) for b in bases))
    else:  # no system database: the tzdata package's list, if any, decides
        names = zoneinfo.available_timezones()
        known = not names or value in names
    if not known:
        raise ValueError(f"unknown time zone {value!r}; see `timedatectl list-timezones`")
    return value


def deb_package(value: str) -> str:
    """A Debian package name."""
    if not _DEB_PACKAGE.match(value):
        raise ValueError(f"{value!r} is not a Debian package name")
    return value


def http_url(value: str) -> str:
    """An http:// or https:// URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def lan_device(value: str) -> str:
    """A LAN device named by MAC address or IP address."""
    if _MAC.match(value):
        return value.lower()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is neither a MAC address nor an IP address") from None


def _ipv4_probe_host(value: str, h: str) -> None:
    """Probes go out over IPv4 only (the uplinks' IPv4 routes): an IPv6 address would fail
    every round, so it is refused here instead of taking the uplink down."""
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        host(h)
        return
    if addr.version == 6:
        raise ValueError(f"{value!r}: probes go over IPv4; use an IPv4 address or a name "
                         "(e.g. \"icmp:1.1.1.1\")")


def probe_target(value: str) -> str:
    """`icmp:HOST`, `tcp:HOST:PORT`, `dns:SERVER`, or an http(s) URL; IPv4 or a name."""
    if value.startswith(("http://", "https://")):
        http_url(value)
        _ipv4_probe_host(value, urlsplit(value).hostname or "")
        return value
    kind, _, rest = value.partition(":")
    if kind == "icmp":
        _ipv4_probe_host(value, rest)
        return value
    if kind == "dns":
        ip_address(rest)
        _ipv4_probe_host(value, rest)
        return value
    if kind == "tcp":
        h, sep, p = rest.rpartition(":")
        if not sep or not p.isdigit():
            raise ValueError(f"{value!r}: a TCP probe needs a port, like \"tcp:1.1.1.1:443\"")
        _ipv4_probe_host(value, h.strip("[]"))
        port(int(p))
        return value
    raise ValueError(
        f"{value!r} is not a probe target; write \"icmp:1.1.1.1\", \"tcp:1.1.1.1:443\", "
        "\"dns:9.9.9.9\" or an http(s) URL"
    )


def host_port(value: str) -> str:
    """`HOST:PORT` (IPv6 in brackets), as a syslog or DNS server target."""
    h, sep, p = value.rpartition(":")
    if not sep or not p.isdigit():
        raise ValueError(f"{value!r} needs a port, like \"192.0.2.10:514\"")
    host(h.strip("[]"))
    port(int(p))
    return value
