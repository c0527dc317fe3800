"""The network part's reconcile without root: `Seams` built here, with fake links (a route
applier that reports what the test says the interfaces are and records what it is asked to
apply), a fake packet filter, /proc/sys and conntrack. The namespace tests (tests/net/) check
the same steps against the kernel; this one checks the decisions and the report."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from failberry import config, reports
from failberry.bus import ActiveUplinkChanged, Bus, PublishedAddressChanged
from failberry.net import plan as netplan
from failberry.net.part import NetworkPart, Seams
from failberry.status import NetworkReport, Status, network_view

CONFIG = """
[modem]
apn = "internet"
[failover]
mode = "gateway"
hold_down = "0s"
[uplink.wired]
interface = "eth1"
address = "203.0.113.2/24"
gateway = "203.0.113.1"
[paths]
run_dir = "{tmp}/run"
state_dir = "{tmp}/state"
"""


class FakeRoutes:
    """Links as the test sets them; the routes and rules it was asked to apply."""

    def __init__(self) -> None:
        self.links: dict[str, netplan.LinkState] = {}
        self.applied: list[tuple[tuple[netplan.RouteSpec, ...],
                                 tuple[netplan.RuleSpec, ...]]] = []

    def observe(self, interfaces: Iterable[str]) -> dict[str, netplan.LinkState]:
        return {name: self.links.get(name, netplan.LinkState()) for name in interfaces}

    def active_interface(self) -> str | None:
        return None

    def apply(self, routes: Iterable[netplan.RouteSpec],
              rules: Iterable[netplan.RuleSpec]) -> list[str]:
        self.applied.append((tuple(routes), tuple(rules)))
        return [f"routes applied ({len(self.applied)})"]

    def clean(self) -> list[str]:
        return []


class FakeFirewall:
    def __init__(self) -> None:
        self.synced: list[tuple[str, ...]] = []

    def sync(self, chains: Sequence[Any], tables: Sequence[str] = ()) -> list[str]:
        self.synced.append(tuple(tables))
        return []

    def clean(self, tables: Sequence[str] = ()) -> list[str]:
        return []

    def counters(self, table: str, chain: str) -> list[tuple[int, int]]:
        return []


class FakeSysctl:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def read(self, key: str) -> str | None:
        return self.values.get(key, "0")

    def write(self, key: str, value: str) -> None:
        self.values[key] = value


class FakeFlusher:
    def __init__(self) -> None:
        self.flushed: list[str] = []

    async def flush_nat(self, address: str) -> int:
        self.flushed.append(address)
        return 0

    async def drop_unnated(self, lan: str) -> int:
        return 0


def up(address: str) -> netplan.LinkState:
    return netplan.LinkState(present=True, carrier=True, address=address)


def test_reconcile_fails_over_on_a_lost_carrier_and_reports_it(tmp_path: Path) -> None:
    cfg = config.parse(CONFIG.format(tmp=tmp_path))
    routes, flusher = FakeRoutes(), FakeFlusher()
    routes.links = {"eth0": up("192.168.1.2"), "eth1": up("203.0.113.2"),
                    "ppp0": up("10.64.0.7")}
    seams = Seams(netlink=None, firewall=FakeFirewall(), sysctl=FakeSysctl(),  # type: ignore[arg-type]
                  flusher=flusher, prober=None, monitor=None,  # type: ignore[arg-type]
                  clock=lambda: 100.0, wall=lambda: 1.7e9, routes=routes)
    status, bus = Status(state="running"), Bus()
    part = NetworkPart(cfg, status, bus, seams, state_dir=tmp_path / "run",
                       usage_path=tmp_path / "usage.json")
    changes = bus.subscribe(ActiveUplinkChanged)
    published = bus.subscribe(PublishedAddressChanged)

    async def scenario() -> None:
        part._pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            await part._reconcile("start")
            view = network_view(status)
            assert view is not None and view.active_uplink == "wired"
            active_routes = [r for r in routes.applied[-1][0] if r.table == netplan.TABLE_ACTIVE]
            assert [r.interface for r in active_routes] == ["eth1"]

            routes.links["eth1"] = netplan.LinkState(present=True, carrier=False,
                                                     address="203.0.113.2")
            await part._reconcile("link event")
        finally:
            part._pool.shutdown()

    asyncio.run(scenario())
    active_routes = [r for r in routes.applied[-1][0] if r.table == netplan.TABLE_ACTIVE]
    assert [r.interface for r in active_routes] == ["ppp0"]
    assert flusher.flushed == ["203.0.113.2"]  # flows NATed to the uplink left behind
    assert [(e.uplink, e.previous) for e in _drain(changes)] == [("wired", None),
                                                                 ("mobile", "wired")]
    assert [e.address for e in _drain(published)] == ["203.0.113.2", "10.64.0.7"]
    view = network_view(status)
    assert view is not None and view.active_uplink == "mobile" and view.failovers_total == 2
    assert view.uplinks["wired"].reason == "eth1 has no carrier"
    assert view.uplinks["wired"].link is False and view.uplinks["mobile"].link is True
    assert status.parts["network"].state == "degraded"  # mobile active, not probed yet
    # What /status serves parses back to the report the part published.
    detail = {k: v for k, v in status.snapshot()["parts"]["network"].items()
              if k not in ("state", "age_s", "stale")}
    assert reports.parse(NetworkReport, detail) == view.report


def _drain(q: asyncio.Queue[Any]) -> list[Any]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


class _Monitor:
    def __init__(self) -> None:
        self.events: asyncio.Queue[object] = asyncio.Queue()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _SilentProber:
    async def round(self, *args: object) -> list[object]:
        await asyncio.Event().wait()
        return []


def test_the_running_part_leaves_its_registration_to_the_supervisor(tmp_path: Path) -> None:
    """It used to register itself in run(): each rebuild after a crash reset its deadline and
    state, so a part crashing in a loop never went stale and the watchdog kept pinging."""
    cfg = config.parse(CONFIG.format(tmp=tmp_path))
    routes = FakeRoutes()
    routes.links = {"eth0": up("192.168.1.2"), "eth1": up("203.0.113.2"),
                    "ppp0": up("10.64.0.7")}
    seams = Seams(netlink=None, firewall=FakeFirewall(), sysctl=FakeSysctl(),  # type: ignore[arg-type]
                  flusher=FakeFlusher(), prober=_SilentProber(),  # type: ignore[arg-type]
                  monitor=_Monitor(), routes=routes)  # type: ignore[arg-type]
    status = Status(state="running")
    status.register("network", 999.0)  # as the supervisor did when it built the first object
    part = NetworkPart(cfg, status, Bus(), seams, state_dir=tmp_path / "run",
                       usage_path=tmp_path / "usage.json")

    async def scenario() -> None:
        task = asyncio.create_task(part.run())
        for _ in range(200):
            if network_view(status) is not None and network_view(status).active_uplink:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert status.parts["network"].deadline == 999.0
    assert status.parts["network"].state in ("ok", "degraded")  # it did report
