"""An on-link default route (an uplink with no gateway and no ppp peer) is really removed.

The kernel refuses a route delete whose scope does not match (ESRCH), and the applier treats
ESRCH as "already gone": before the fix, stop and `failberry net clean` both logged
"table 2002: removed default oif N" while the route stayed in the table.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from pyroute2 import NetNS

from failberry.net.apply_routes import RouteApplier
from failberry.net.plan import RouteSpec

pytestmark = [pytest.mark.root]


@pytest.fixture
def ns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"fbonl-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["link", "add", "ppp0", "type", "veth", "peer", "name", "ppp0p"],
                    ["addr", "add", "198.51.100.2/24", "dev", "ppp0"],
                    ["link", "set", "ppp0", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _table(ns: str, table: int) -> str:
    return subprocess.run(["ip", "-n", ns, "-4", "route", "show", "table", str(table)],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_clean_removes_an_on_link_default_route(ns: str) -> None:
    nl = NetNS(ns)
    try:
        applier = RouteApplier(nl)
        applier.apply([RouteSpec(table=2002, interface="ppp0", gateway=None)], [])
        assert "default dev ppp0" in _table(ns, 2002)
        changes = applier.clean()
        assert any("table 2002: removed" in c for c in changes)
        assert _table(ns, 2002) == ""
    finally:
        nl.close()

