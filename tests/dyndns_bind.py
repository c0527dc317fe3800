"""A real BIND 9 `named` for the dynamic DNS tests and bench: its own zone and TSIG key, on a
loopback port, its working directory in a temporary folder, killed on `stop()`.

`argv_prefix` lets the bench start it inside a network namespace (`ip netns exec NS`)."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

NAMED = "/usr/sbin/named"
ZONE = "dyn.test"
KEY_NAME = "fb-key"


def new_secret() -> str:
    """A random base64 HMAC-SHA256 secret, as `tsig-keygen` makes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port: int = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


class Named:
    """One `named -g` process serving `ZONE` with dynamic updates allowed for `KEY_NAME`."""

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = "127.0.0.1",
                 secret: str | None = None, argv_prefix: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port or free_udp_tcp_port(host)
        self.secret = secret or new_secret()
        self.argv_prefix = list(argv_prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "named.log"

    def write_config(self) -> Path:
        """named.conf and the zone file in the working directory."""
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        os.chmod(w, 0o700)
        (w / f"{ZONE}.db").write_text(
            f"$TTL 60\n"
            f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n"
            f"@ IN NS ns1.{ZONE}.\n"
            f"ns1 IN A 127.0.0.1\n"
            f"old IN A 192.0.2.1\n")
        conf = w / "named.conf"
        conf.write_text(f"""
options {{
    directory "{w}";
    pid-file "{w}/named.pid";
    session-keyfile "{w}/session.key";
    managed-keys-directory "{w}";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{self.secret}"; }};
zone "{ZONE}" {{
    type primary;
    file "{w}/{ZONE}.db";
    allow-update {{ key "{KEY_NAME}"; }};
}};
""")
        conf.chmod(0o600)
        return conf

    def start(self, timeout: float = 15.0) -> None:
        """Start named and wait until it answers for the zone."""
        conf = self.write_config()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*self.argv_prefix, NAMED, "-g", "-n", "1", "-c", str(conf)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"named exited {self.proc.returncode}: "
                                   f"{self.log_text()[-2000:]}")
            try:
                if self.soa_serial() > 0:
                    return
            except (OSError, dns.exception.DNSException):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"named did not answer within {timeout}s: {self.log_text()[-2000:]}")

    def query(self, name: str, rdtype: str = "A") -> frozenset[str]:
        """What named answers for NAME (relative to the zone or absolute)."""
        fq = name if name.endswith(ZONE) else f"{name}.{ZONE}"
        q = dns.message.make_query(fq, dns.rdatatype.from_text(rdtype))
        r = dns.query.udp(q, self.host, port=self.port, timeout=1.0)
        return frozenset(rd.to_text() for rrset in r.answer for rd in rrset)

    def soa_serial(self) -> int:
        """The zone's SOA serial (proves named is up and authoritative)."""
        q = dns.message.make_query(ZONE, dns.rdatatype.SOA)
        r = dns.query.udp(q, self.host, port=self.port, timeout=0.5)
        if r.rcode() != dns.rcode.NOERROR or not r.answer:
            return 0
        serial: int = r.answer[0][0].serial
        return serial

    def log_text(self) -> str:
        """Everything named wrote so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill named (its whole session) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Named:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
