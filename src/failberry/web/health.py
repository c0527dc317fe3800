"""The routes on port 9000: `/ping` (200 whenever the supervisor runs), `/health` for DNS
failover checkers, `/health/<uplink>`, `/status` (the whole snapshot as JSON) and `/metrics`
(Prometheus text).

The health decision is what a Route53-style checker acts on, so it is one pure function of the
status snapshot and the topology (`decide`); the server around it is `failberry.web.httpserver`."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from failberry import __version__
from failberry.config import Config, FailoverMode
from failberry.inbound import mobile_warning
from failberry.status import (
    DYNDNS,
    MODEM,
    UPLINKS,
    NetworkView,
    Status,
    jsonable,
    network_view,
)
from failberry.web import metrics
from failberry.web.httpserver import HttpStats, Response, error

LOG = logging.getLogger(__name__)

_LIBRARIES = ("pyroute2", "python-iptables", "pyserial", "pyusb", "pyudev", "dnspython",
              "requests")
_PEER_CACHE_MAX = 1024
_HEALTH_CACHE_MAX = 64
DOC_TTL = 0.25  # seconds a rendered /status or /metrics may be served again


@dataclass(frozen=True)
class Verdict:
    """The answer `/health` gives, with the reason in a few words."""

    ok: bool
    reason: str


def decide(status: Status, mode: FailoverMode, now: float | None = None) -> Verdict:
    """The published path works: sidecar, the mobile uplink passes its probes; gateway, at
    least one uplink does; and the network part reports no configuration error (an interface
    the config names that does not exist). Without a network part: running and every part
    current."""
    if status.state != "running":
        return Verdict(False, f"supervisor {status.state}")
    net = network_view(status, now)
    if net is None:
        stale = status.stale_parts(now)
        if stale:
            return Verdict(False, f"{', '.join(stale)} not reporting")
        return Verdict(True, "running")
    if not net.current:
        return Verdict(False, "network checks not reporting")
    errors = network_errors(status)
    if errors:
        return Verdict(False, "; ".join(errors))
    if mode is FailoverMode.SIDECAR:
        mobile = net.uplinks.get("mobile")
        if mobile is None:
            return Verdict(False, "mobile uplink not probed yet")
        if mobile.up and mobile.carrier is not False:
            return Verdict(True, "mobile up")
        return Verdict(False, f"mobile down: {mobile.reason}" if mobile.reason else "mobile down")
    ups = sorted(name for name, u in net.uplinks.items() if u.up and u.carrier is not False)
    if ups:
        return Verdict(True, f"{', '.join(ups)} up")
    return Verdict(False, "no uplink passes its probes")


def network_errors(status: Status) -> list[str]:
    """The network part's configuration errors (`errors` in its report), each one line."""
    net = network_view(status)
    return [] if net is None else list(net.report.errors)


def decide_uplink(net: NetworkView | None, name: str) -> Verdict:
    """The same for one uplink."""
    if net is None:
        return Verdict(False, "no network checks running")
    if not net.current:
        return Verdict(False, "network checks not reporting")
    u = net.uplinks.get(name)
    if u is None:
        return Verdict(False, f"{name} not probed yet")
    if u.up and u.carrier is not False:
        return Verdict(True, f"{name} up")
    return Verdict(False, f"{name} down: {u.reason}" if u.reason else f"{name} down")


def versions() -> dict[str, str]:
    """failberry's, Python's, the kernel's and the runtime libraries' versions."""
    from importlib import metadata  # seconds to import on a Pi: only when /status asks

    out = {"failberry": __version__, "python": platform.python_version(),
           "kernel": os.uname().release}
    for lib in _LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


# `/ping`: answered whenever the supervisor runs, whatever the uplinks' state: "you reached
# the Pi through this path" (a DNS failover checker's test of the wired path).
PING = Response(200, b"ok\n", "text/plain; charset=utf-8")


_OMITTED_WHEN_NONE = frozenset({"inbound_warning", "modem", "data", "dyndns"})


def _inbound_warning(net: NetworkView | None) -> str | None:
    """The CGNAT/NAT sentence for the mobile uplink's current address, or None."""
    mobile = None if net is None else net.uplinks.get("mobile")
    address = None if mobile is None else mobile.address
    seen = (None if net is None else net.report.public_address) or {}
    public = seen.get("public") if seen.get("local") == address else None
    return mobile_warning(address, public)


class HealthApp:
    """The request handler: routes, the LAN restriction, and the /status document."""

    def __init__(self, status: Status, cfg: Config, http: HttpStats,
                 restarts: Mapping[str, int] | None = None) -> None:
        self.status = status
        self.http = http
        self.restarts: Mapping[str, int] = restarts if restarts is not None else {}
        self._versions: dict[str, str] | None = None
        self._last: Verdict | None = None
        self._peers: dict[str, bool] = {}
        self._health_cache: dict[tuple[str, Verdict], Response] = {}
        self._doc_cache: dict[str, tuple[float, int, Response]] = {}
        self.configure(cfg)

    def configure(self, cfg: Config) -> None:
        """Take a (re)loaded config: topology, LAN prefix, the LAN-only switch."""
        self.cfg = cfg
        self.mode = cfg.failover.mode
        self.lan = ipaddress.ip_interface(cfg.lan.address).network
        self.lan_only = cfg.health.lan_only_status
        self._peers.clear()

    def verdict(self) -> Verdict:
        """The current health decision; logs one line each time it changes."""
        v = decide(self.status, self.mode)
        if v != self._last:
            if self._last is None or v.ok != self._last.ok:
                LOG.info("health: %s (%s)", "ok" if v.ok else "fail", v.reason)
            self._last = v
        return v

    def allowed(self, peer: str) -> bool:
        """Whether `peer` may read /status and /metrics: loopback or the LAN prefix."""
        if not self.lan_only:
            return True
        hit = self._peers.get(peer)
        if hit is None:
            try:
                ip = ipaddress.ip_address(peer.split("%", 1)[0])
            except ValueError:
                hit = False
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                hit = ip.is_loopback or (ip.version == self.lan.version and ip in self.lan)
            if len(self._peers) >= _PEER_CACHE_MAX:
                self._peers.clear()
            self._peers[peer] = hit
        return hit

    def __call__(self, method: str, path: str, peer: str) -> Response:
        """Route one GET or HEAD."""
        if path == "/ping":
            return PING
        if path == "/health":
            return self._health_response("", self.verdict())
        if path.startswith("/health/"):
            name = path[len("/health/"):]
            net = network_view(self.status)
            if name not in UPLINKS and (net is None or name not in net.uplinks):
                return error(404, "no such uplink")
            return self._health_response(name, decide_uplink(net, name))
        if path in ("/status", "/metrics"):
            if not self.allowed(peer):
                LOG.debug("refused %s to %s: not on the LAN", path, peer)
                return error(403, "only from the LAN")
            return self._document_response(path)
        return error(404, "not found")

    def _document_response(self, path: str) -> Response:
        """/status or /metrics, rendered at most every DOC_TTL seconds while nothing changed:
        a client pipelining thousands of them costs little."""
        now = time.monotonic()
        hit = self._doc_cache.get(path)
        if hit is not None and hit[0] > now and hit[1] == self.status.generation:
            return hit[2]
        if path == "/status":
            resp = Response(200, (json.dumps(self.document(), separators=(",", ":"))
                                  + "\n").encode())
        else:
            resp = Response(200, metrics.render(self.document()).encode(), metrics.CONTENT_TYPE)
        self._doc_cache[path] = (now + DOC_TTL, self.status.generation, resp)
        return resp

    def _health_response(self, uplink: str, v: Verdict) -> Response:
        key = (uplink, v)
        resp = self._health_cache.get(key)
        if resp is None:
            body: dict[str, Any] = {"status": "ok" if v.ok else "fail"}
            if uplink:
                body["uplink"] = uplink
            body["reason"] = v.reason
            resp = Response(200 if v.ok else 503,
                            (json.dumps(body, separators=(",", ":")) + "\n").encode())
            if len(self._health_cache) >= _HEALTH_CACHE_MAX:
                self._health_cache.clear()
            self._health_cache[key] = resp
        return resp

    def document(self) -> dict[str, Any]:
        """The /status document: the verdict, uplinks, modem, data, events, DDNS, versions."""
        if self._versions is None:
            self._versions = versions()
        snap = self.status.snapshot()
        v = self.verdict()
        net = network_view(self.status)
        parts = snap["parts"]
        uplinks: dict[str, Any] = {}
        if net is not None:
            for name, u in sorted(net.uplinks.items()):
                verdict = decide_uplink(net, name)
                uplinks[name] = {"health": "ok" if verdict.ok else "fail",
                                 "active": name == net.active_uplink, **jsonable(u)}
        doc: dict[str, Any] = {
            "status": "ok" if v.ok else "fail",
            "reason": v.reason,
            "state": snap["state"],
            "mode": self.mode.value,
            "time": time.time(),
            "uptime_s": snap["uptime_s"],
            "started_at": snap["started_at"],
            "version": __version__,
            "versions": self._versions,
            "active_uplink": None if net is None else net.active_uplink,
            "inbound_warning": _inbound_warning(net),
            "uplinks": uplinks,
            "modem": parts.get(MODEM),
            "data": None if net is None or net.data is None else jsonable(net.data),
            "failovers_total": 0 if net is None else net.failovers_total,
            "events": [] if net is None else [jsonable(e) for e in net.events],
            "dyndns": parts.get(DYNDNS),
            "parts": parts,
            "restarts": dict(self.restarts),
            "http": {"connections": self.http.connections, "accepted": self.http.accepted,
                     "evicted": self.http.evicted, "timed_out": self.http.timed_out,
                     "requests": {str(k): n for k, n in sorted(self.http.requests.items())}},
        }
        # What is absent (no modem part, no DNS name, no warning) is left out, not null;
        # active_uplink stays: null there is the fact that no uplink works.
        return {k: val for k, val in doc.items()
                if val is not None or k not in _OMITTED_WHEN_NONE}
