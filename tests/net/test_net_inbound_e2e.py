"""Acceptance: staying reachable from outside (issue 14), with real packets in namespaces.

Sidecar: an outside host reaches the Pi's `/ping` through the main router's port forward (the
wired path), `/health` through the Pi's mobile address, and the LAN host's UDP 1194 and TCP 443
through the mobile address (`[[forward]]`), every reply from the address it was sent to.
Gateway: the same through both uplinks, while either one is active. Clean-up: after a stop
and after `failberry net clean`, rules, every routing table and both legacy iptables equal
the state before start (after a stop, except the filter chains a clean stop keeps closed on
purpose until `net clean`: fb-input, fb-forward and the chains they and OUTPUT jump to, as
`plan.closed` gives them). The "internet" drops packets whose source does not belong to the
link they arrive on, so a reply sent out of the wrong uplink is lost, as with a real operator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inbound_topo import (
    NATTED,
    OUTSIDE,
    PI_LAN,
    PI_MOBILE,
    PI_WIRED,
    ROUTER_WAN,
    Inbound,
    config_text,
    get,
    tcp_ask,
    udp_ask,
    until,
)
from topology import PY

from failberry import config
from failberry.net import plan

pytestmark = [pytest.mark.root]


@pytest.fixture(params=["sidecar", "gateway"])
def net(request: pytest.FixtureRequest) -> Iterator[Inbound]:
    t = Inbound(request.param)
    try:
        t.up()
        yield t
    finally:
        t.down()


def start(t: Inbound, tmp: Path) -> subprocess.Popen[str]:
    cfg = tmp / "failberry.toml"
    cfg.write_text(config_text(t.mode, tmp))
    log = (tmp / "supervisor.log").open("w")
    return t.spawn("pi", [PY, str(Path(__file__).parent / "inbound_topo.py"), "run", str(cfg),
                          str(tmp / "run")], stdout=log, stderr=subprocess.STDOUT)


def status(t: Inbound) -> dict[str, Any]:
    with t.inside("pi"):
        code, raw = get("127.0.0.1", 9000, "/status", source="")
    assert code == 200
    doc: dict[str, Any] = json.loads(raw)
    return doc


def active(t: Inbound) -> str | None:
    value = status(t)["active_uplink"]
    return None if value is None else str(value)


def wait_active(t: Inbound, name: str) -> None:
    def check() -> None:
        assert active(t) == name
    until(check, 20)


def reachable(t: Inbound, addr: str, seen_as: str) -> None:
    """/health and both forwards through `addr`; each reply from `addr`; the LAN host saw the
    connection come from `seen_as`."""
    with t.inside():
        def healthy() -> None:
            code, raw = get(addr, 9000, "/health")
            assert code == 200 and b'"ok"' in raw, (addr, code, raw)
        until(healthy)
        data, src = until(lambda: udp_ask(addr))  # type: ignore[misc]
        assert (data, src) == (f"udp from {seen_as}".encode(), addr)
        assert until(lambda: tcp_ask(addr)) == f"tcp from {seen_as}".encode()


def stop(p: subprocess.Popen[str]) -> None:
    os.killpg(p.pid, signal.SIGTERM)
    assert p.wait(20) == 0


def kept(cfg: Path) -> set[str]:
    """The filter chains a clean stop keeps (closed) until `net clean`."""
    return {c.name for c in plan.closed(config.load(cfg))}


def without(snap: dict[str, str], chains: set[str]) -> dict[str, str]:
    """The snapshot without the lines naming these chains (their jumps and rules)."""
    return {k: "\n".join(line for line in v.splitlines()
                         if not any(re.search(rf"(^|\s|:){c}(\s|$)", line) for c in chains))
            for k, v in snap.items()}


@pytest.mark.timeout(180)
def test_reachable_from_outside_and_cleaned_up(net: Inbound, tmp_path: Path) -> None:
    t = net
    before = t.snapshot()
    p = start(t, tmp_path)
    try:
        if t.mode == "sidecar":
            wait_active(t, "mobile")
            with t.inside():
                # The wired path: the main router's forward to the Pi, answered back through it.
                assert until(lambda: get(ROUTER_WAN, 9000, "/ping")) == (200, b"ok\n")
                # The router's own forward of UDP 1194 to the LAN host still works.
                assert udp_ask(ROUTER_WAN) == (f"udp from {OUTSIDE}".encode(), ROUTER_WAN)
            # Forwards through the mobile link reach the host from the Pi's LAN address (the
            # host's default route is the main router).
            reachable(t, PI_MOBILE, PI_LAN)
            # The "what is my address" service shows the mobile address NATed: said plainly.
            def natted() -> None:
                assert status(t)["inbound_warning"] == (
                    "inbound through the mobile link will not work: the operator NATs its "
                    f"address ({PI_MOBILE} is seen outside as {NATTED}); ask for a public-IP APN")
            until(natted, 10)
        else:
            wait_active(t, "wired")
            for addr in (PI_WIRED, PI_MOBILE):
                reachable(t, addr, OUTSIDE)
            # Asked over the mobile link (from elsewhere the internet would drop it), the
            # service sees the mobile address itself: no warning.
            def public() -> None:
                doc = status(t)
                assert doc["parts"]["network"]["public_address"] == {"local": PI_MOBILE,
                                                                      "public": PI_MOBILE}
                assert doc.get("inbound_warning") is None
            until(public, 10)
            # The wired path fails its probes: mobile carries the LAN; both stay reachable.
            t.sh("inet", "iptables-legacy -A INPUT -i w0 -p icmp -j DROP")
            wait_active(t, "mobile")
            for addr in (PI_WIRED, PI_MOBILE):
                reachable(t, addr, OUTSIDE)
            with t.inside():
                assert get(PI_WIRED, 9000, "/ping") == (200, b"ok\n")
            t.sh("inet", "iptables-legacy -D INPUT -i w0 -p icmp -j DROP")
            wait_active(t, "wired")
            for addr in (PI_WIRED, PI_MOBILE):
                reachable(t, addr, OUTSIDE)
        # Each forward is counted (sampled with the periodic check, every 5 s).
        def counted() -> None:
            with t.inside("pi"):
                code, raw = get("127.0.0.1", 9000, "/metrics", source="")
            assert code == 200
            text = raw.decode()
            for name in ("udp/1194", "tcp/443"):
                for d in ("in", "out"):
                    lines = [x for x in text.splitlines()
                             if x.startswith("failberry_forward_packets_total{")
                             and f'forward="{name}"' in x and f'direction="{d}"' in x]
                    assert len(lines) == 1 and float(lines[0].split()[-1]) > 0, lines
        until(counted, 12)
    finally:
        stop(p)
    # Idempotent: the periodic checks (every 5 s) found nothing to change.
    log = (tmp_path / "supervisor.log").read_text()
    assert "(periodic check)" not in log, log
    after_stop = t.snapshot()
    closed = kept(tmp_path / "failberry.toml")
    assert {"fb-input", "fb-forward"} <= closed
    assert all(f":{c} - " in after_stop["iptables-legacy-save"] for c in closed)
    assert without(after_stop, closed) == without(before, closed)
    out = t.sh("pi", f"{PY} -m failberry net clean --state-dir {tmp_path / 'run'}")
    assert "change" in out
    assert t.snapshot() == before
