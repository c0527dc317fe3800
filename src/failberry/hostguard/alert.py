"""Telling someone before the reboot: RFC 5424 syslog over UDP (RFC 5426) to the log host, and
a line in the kernel log (/dev/kmsg, which the journal and a netconsole also carry).

Everything that could touch the disk or block (name resolution reads /etc/hosts and may ask
DNS) happens when the sinks are built at start, never when the alert is sent."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Protocol

from failberry.errors import FailberryError

LOG = logging.getLogger(__name__)

APP = "failberry-hostguard"
FACILITY_DAEMON = 3
SEVERITY_CRIT, SEVERITY_WARNING, SEVERITY_NOTICE = 2, 4, 5
# RFC 5426 3.2: receivers should take 2048 octets; larger datagrams get truncated or lost.
MAX_DATAGRAM = 2048
# printk truncates a record near 1 KiB; we keep each kmsg line well under it.
MAX_KMSG_LINE = 900
# The enterprise number RFC 5612 reserves for documentation; our structured data is private.
SD_ID = "hostguard@32473"


class AlertError(FailberryError):
    """An alert sink could not be set up (the target does not resolve, /dev/kmsg is closed)."""


def _sd_escape(value: str) -> str:
    # RFC 5424 6.3.3: escape '"', '\' and ']' inside PARAM-VALUE.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def rfc3339(epoch: float) -> str:
    """UTC timestamp with microseconds, computed without the time zone database."""
    t = time.gmtime(epoch)
    micros = int((epoch % 1) * 1_000_000)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
            f"{t.tm_sec:02d}.{micros:06d}Z")


def format_rfc5424(message: str, *, severity: int, hostname: str, procid: int, msgid: str,
                   params: Sequence[tuple[str, str]] = (), epoch: float | None = None) -> bytes:
    """One syslog message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`, at most 2048
    octets."""
    pri = FACILITY_DAEMON * 8 + severity
    when = rfc3339(time.time() if epoch is None else epoch)
    sd = "-"
    if params:
        sd = "[" + SD_ID + "".join(f' {k}="{_sd_escape(v)}"' for k, v in params) + "]"
    head = f"<{pri}>1 {when} {hostname or '-'} {APP} {procid} {msgid} {sd} "
    # The BOM marks MSG as UTF-8 (RFC 5424 6.4).
    data = head.encode() + b"\xef\xbb\xbf" + message.encode("utf-8", "replace")
    return data[:MAX_DATAGRAM]


class Sink(Protocol):
    """Where an alert goes."""

    def send(self, severity: int, msgid: str, message: str,
             params: Sequence[tuple[str, str]]) -> bool:
        """Send it; False when it could not be handed over (never raises, never blocks)."""
        ...


class UdpSyslog:
    """RFC 5424 over UDP to HOST:PORT, resolved once, when built."""

    def __init__(self, target: str, hostname: str | None = None) -> None:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
        except (OSError, ValueError) as e:
            raise AlertError(f"hostguard.syslog_target {target!r} does not resolve: {e}"
                             ) from None
        family, _, _, _, address = infos[0]
        self.address: tuple[object, ...] = tuple(address)
        self.target = target
        self.hostname = hostname or socket.gethostname()
        self.sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)

    def send(self, severity: int, msgid: str, message: str,
             params: Sequence[tuple[str, str]]) -> bool:
        """Send one datagram."""
        data = format_rfc5424(message, severity=severity, hostname=self.hostname,
                              procid=os.getpid(), msgid=msgid, params=params)
        try:
            self.sock.sendto(data, self.address)
            return True
        except OSError as e:
            LOG.warning("syslog to %s failed: %s", self.target, e)
            return False


class Kmsg:
    """Lines into the kernel log through a descriptor opened at start (/dev/kmsg)."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_APPEND)
        except OSError as e:
            raise AlertError(f"cannot open {path}: {e.strerror}") from None
        self.path = path

    def send(self, severity: int, msgid: str, message: str,
             params: Sequence[tuple[str, str]]) -> bool:
        """One record per line, tagged `<severity>failberry-hostguard: `."""
        ok = True
        text = f"{msgid}: {message}"
        for i in range(0, len(text), MAX_KMSG_LINE):
            chunk = text[i:i + MAX_KMSG_LINE]
            try:
                os.write(self.fd, f"<{severity}>{APP}: {chunk}\n".encode("utf-8", "replace"))
            except OSError as e:
                LOG.warning("write to %s failed: %s", self.path, e)
                ok = False
        return ok


class Alerter:
    """Sends to every sink and to our own log (the journal, under systemd)."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def send(self, severity: int, msgid: str, message: str,
             params: Sequence[tuple[str, str]] = ()) -> bool:
        """True when every sink took it."""
        level = (logging.CRITICAL if severity <= SEVERITY_CRIT else
                 logging.WARNING if severity <= SEVERITY_WARNING else logging.INFO)
        LOG.log(level, "%s: %s", msgid, message)
        results = [sink.send(severity, msgid, message, params) for sink in self.sinks]
        return all(results)
