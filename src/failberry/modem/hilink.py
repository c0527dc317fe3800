"""HiLink sticks (Huawei E3372h and friends): no AT port; a small router on a USB Ethernet
interface with a DHCP server (192.168.8.1) and an XML web API, spoken here over `requests`
in one thread the event loop owns.

The API wants a session and a verification token: `GET /api/webserver/SesTokInfo` gives
`<SesInfo>` (sent back as the cookie) and `<TokInfo>` (sent as `__RequestVerificationToken`
on every POST; a reply may carry the next token in the same header). An expired session or a
stale token is answered `<error><code>125002</code>` / `125003`: the handshake is redone
once and the request repeated.

`HilinkBackend` answers the machine's actions as the AT session does for the other paths
(open = handshake, SIM = `/api/pin/status`, registration = `/api/monitoring/status`, reset =
`/api/device/control`), and `HilinkRunner` stands where pppd stands: data switch off and on
(`/api/dialup/mobile-dataswitch`), DHCP on the interface, then watching the connection
status; the ladder is the same as for every path."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests  # type: ignore[import-untyped]  # Debian ships no stubs

from failberry.aio import within
from failberry.modem import events as ev
from failberry.modem.dhcp import DhcpClient, DhcpError, Lease
from failberry.modem.errors import ModemError
from failberry.modem.ladder import Rung
from failberry.modem.parsers import Registration, RegStat, SimState

LOG = logging.getLogger(__name__)

BASE = "http://192.168.8.1"
TOKEN = "__RequestVerificationToken"
ERRORS = {125001: "wrong token", 125002: "session expired", 125003: "wrong verification token",
          100002: "not supported", 100003: "no rights (login required)",
          100004: "system busy", 108003: "already logged in"}
RETRY_CODES = frozenset({125001, 125002, 125003})
CONNECTED, DISCONNECTED = "901", "902"
# CurrentNetworkType (and -Ex) of /api/monitoring/status.
NETWORK_TYPES = {"0": None, "1": "GSM", "2": "GPRS", "3": "EDGE", "4": "UMTS", "5": "HSDPA",
                 "6": "HSUPA", "7": "HSPA", "9": "HSPA+", "19": "LTE", "101": "LTE"}
# SimState of /api/pin/status.
SIM_STATES = {"255": SimState.MISSING, "256": SimState.ERROR, "257": SimState.READY,
              "258": SimState.READY, "259": SimState.READY, "260": SimState.PIN,
              "261": SimState.PUK}
CLONE_NEWNET = 0x40000000


class HilinkError(ModemError):
    """The stick's API did not answer, or answered with an error."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def parse(text: str) -> dict[str, str]:
    """A `<response>`'s children as a flat dict (`<response>OK</response>` -> {"": "OK"});
    HilinkError for an `<error>` or what is not XML."""
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise HilinkError(f"unreadable answer from the stick: {exc}") from None
    if root.tag == "error":
        code = int(root.findtext("code") or "0")
        raise HilinkError(f"the stick's API says error {code} "
                          f"({ERRORS.get(code, root.findtext('message') or 'unknown')})", code)
    out = {child.tag: (child.text or "").strip() for child in root}
    if not out:
        out[""] = (root.text or "").strip()
    return out


def request_xml(fields: dict[str, str]) -> str:
    """`<request><k>v</k>...</request>`."""
    body = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><request>{body}</request>'


def dbm(text: str | None) -> int | None:
    """`-95dBm` / `&gt;=-51dBm` -> -95 / -51."""
    digits = "".join(ch for ch in (text or "") if ch.isdigit() or ch == "-")
    with contextlib.suppress(ValueError):
        return int(digits)
    return None


class HilinkApi:
    """The API client. Calls run one at a time in the client's own thread (blocking
    `requests` never blocks the loop); `netns` puts that thread in a network namespace
    (the tests' seam: their stick is on the far side of a veth in a namespace)."""

    def __init__(self, base: str = BASE, timeout: float = 3.0, netns: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.netns = netns
        self.session = requests.Session()
        self.token = ""
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="hilink", initializer=self._enter)

    def _enter(self) -> None:
        if self.netns is None:
            return
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {self.netns}")
        finally:
            os.close(fd)

    async def get(self, path: str) -> dict[str, str]:
        """GET an API path."""
        return await self._call(path, None)

    async def post(self, path: str, fields: dict[str, str]) -> dict[str, str]:
        """POST fields to an API path."""
        return await self._call(path, fields)

    async def _call(self, path: str, fields: dict[str, str] | None) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._sync, path, fields)

    def _handshake(self) -> None:
        got = parse(self._http("GET", "/api/webserver/SesTokInfo", None).text)
        self.session.cookies.clear()
        ses = got.get("SesInfo", "")
        if "=" in ses:
            name, _, value = ses.partition("=")
            self.session.cookies.set(name, value)
        self.token = got.get("TokInfo", "")

    def _http(self, method: str, path: str, body: str | None) -> requests.Response:
        headers = {TOKEN: self.token} if self.token else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=UTF-8"
        try:
            r = self.session.request(method, self.base + path, data=body, headers=headers,
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            raise HilinkError(f"no answer from the stick's API ({path}): "
                              f"{type(exc).__name__}") from None
        fresh = r.headers.get(TOKEN)
        if fresh:
            self.token = fresh.split("#")[0]
        return r

    def _sync(self, path: str, fields: dict[str, str] | None) -> dict[str, str]:
        if not self.token:
            self._handshake()
        for attempt in (1, 2):
            body = request_xml(fields) if fields is not None else None
            text = self._http("POST" if body is not None else "GET", path, body).text
            try:
                return parse(text)
            except HilinkError as exc:
                if exc.code in RETRY_CODES and attempt == 1:
                    LOG.info("modem: %s; new session", exc)
                    self._handshake()
                    continue
                raise
        raise AssertionError("unreachable")

    async def handshake(self) -> None:
        """A fresh session and token."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self._handshake)

    def close(self) -> None:
        """Stop the thread (a call in flight ends by its timeout)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class HilinkBackend:
    """The machine's non-data actions for a HiLink stick, and the status poll."""

    def __init__(self, api: HilinkApi, runner: HilinkRunner) -> None:
        self.api = api
        self.runner = runner  # its DHCP gives the address the API is reached from

    async def perform(self, d: Any, action: ev.Action, gen: int) -> None:
        """Carry out `action` for driver `d` (posting its outcome if `gen` is current)."""
        def post(event: ev.Event) -> None:
            if gen == d.gen:
                d.post(event)

        try:
            if isinstance(action, ev.OpenPort):
                await self.runner.ensure_lease()
                await self.api.handshake()
                info = await self.api.get("/api/device/information")
                d.info.update(manufacturer="Huawei", model=info.get("DeviceName", "HiLink"))
                post(ev.PortReady("Huawei", d.info["model"]))
            elif isinstance(action, ev.QuerySim):
                state = (await self.api.get("/api/pin/status")).get("SimState", "")
                sim = SIM_STATES.get(state, SimState.OTHER)
                d.info["sim"] = sim.value
                post(ev.SimReport(sim))
            elif isinstance(action, ev.EnterPin):
                post(ev.PinUnsure("PIN entry through the HiLink API is not supported: "
                                  "unlock the SIM in the stick's web page", seen=False))
            elif isinstance(action, ev.QueryRegistration):
                post(ev.RegistrationReport(await self.registration(d)))
            elif isinstance(action, ev.ResetModem):
                await self.api.post("/api/device/control", {"Control": "1"})
        except HilinkError as exc:
            d.info["last_error"] = str(exc)
            if isinstance(action, ev.ResetModem):
                post(ev.ActionFailed(Rung.MODEM_RESET, str(exc)))
            else:
                post(ev.AtFailed(type(action).__name__, str(exc), silent=exc.code is None))

    async def registration(self, d: Any) -> Registration:
        """Registration from `/api/monitoring/status` (ServiceStatus 2: service)."""
        st = await self.api.get("/api/monitoring/status")
        tech = NETWORK_TYPES.get(st.get("CurrentNetworkTypeEx") or
                                 st.get("CurrentNetworkType", "0"))
        if tech:
            d.info["access_tech"] = tech
        stat = (RegStat.NOT_SEARCHING if st.get("ServiceStatus") != "2"
                else RegStat.ROAMING if st.get("RoamingStatus") == "1" else RegStat.HOME)
        d.info["registration"] = stat.name.lower()
        return Registration("+CEREG" if tech == "LTE" else "+CGREG", stat)

    async def poll(self, d: Any) -> None:
        """Signal, operator, technology and registration for the status."""
        try:
            sig = await self.api.get("/api/device/signal")
            d.info["signal_dbm"] = dbm(sig.get("rssi")) or dbm(sig.get("rsrp"))
            plmn = await self.api.get("/api/net/current-plmn")
            d.info["operator"] = plmn.get("FullName") or plmn.get("ShortName") or None
            await self.registration(d)
        except HilinkError as exc:
            d.info["last_error"] = str(exc)


class HilinkRunner:
    """The data path. DHCP runs whenever the stick is in use (the API is reached over the
    stick's interface, so it starts at "open", before the handshake); a run turns the data
    switch off and on, reports the lease, then looks at the connection status every `watch`
    seconds: `misses` unanswered or "disconnected" looks in a row end it (status 16), like a
    hung-up modem."""

    exclusive = False

    def __init__(self, api: HilinkApi, dhcp: DhcpClient, net: str | None = None, *,
                 watch: float = 5.0, misses: int = 3, lease_timeout: float = 15.0) -> None:
        self.api = api
        self.dhcp = dhcp
        self.net = net
        self.watch = watch
        self.misses = misses
        self.lease_timeout = lease_timeout
        self.why = ""
        self.lease: Lease | None = None
        self._stop: asyncio.Event | None = None
        self._running = False
        self._dhcp_task: asyncio.Task[int] | None = None
        self._leased = asyncio.Event()

    @property
    def running(self) -> bool:
        """Is the data path held?"""
        return self._running

    def attach(self, session: object) -> None:
        """No AT session."""

    def select(self, data: str, net: str | None) -> None:
        """Follow the stick's interface."""
        if net:
            self.net = net

    def urc(self, line: str) -> None:
        """No AT port, no URCs."""

    def _dhcp_event(self, event: str, lease: Lease | None) -> None:
        self.lease = lease
        if lease is not None:
            self._leased.set()
        else:
            self._leased.clear()

    async def ensure_lease(self) -> Lease:
        """DHCP running on the stick's interface and a lease: HilinkError if none comes."""
        if self.net is None:
            raise HilinkError("no network interface for the HiLink stick")
        if self._dhcp_task is None or self._dhcp_task.done():
            self._leased.clear()
            self.lease = None
            self._dhcp_task = asyncio.create_task(self.dhcp.run(self.net, self._dhcp_event))
        try:
            await within(self._leased.wait(), self.lease_timeout)
        except TimeoutError:
            raise HilinkError(f"no DHCP lease from the stick on {self.net} within "
                              f"{self.lease_timeout:g}s") from None
        assert self.lease is not None
        return self.lease

    async def run(self, port: str, on_up: Callable[[str, str], None]) -> int:
        """Hold the data path until it is lost (16) or stopped (5); 8 if it never came."""
        self._stop = asyncio.Event()
        self._running = True
        self.why = ""
        try:
            try:
                lease = await self.ensure_lease()
                with contextlib.suppress(HilinkError):
                    await self.api.post("/api/dialup/mobile-dataswitch", {"dataswitch": "0"})
                await self.api.post("/api/dialup/mobile-dataswitch", {"dataswitch": "1"})
            except (HilinkError, DhcpError) as exc:
                self.why = f"data switch: {exc}"
                return 8
            assert self.net is not None
            on_up(self.net, lease.address)
            missed = 0
            while missed < self.misses:
                with contextlib.suppress(TimeoutError):
                    await within(self._stop.wait(), self.watch)
                if self._stop.is_set():
                    self.why = "stopped"
                    return 5
                try:
                    st = await self.api.get("/api/monitoring/status")
                    ok = st.get("ConnectionStatus") == CONNECTED and self.lease is not None
                    self.why = "" if ok else (f"the stick says {st.get('ConnectionStatus')}"
                                              if self.lease else "the DHCP lease was lost")
                except HilinkError as exc:
                    ok, self.why = False, str(exc)
                missed = 0 if ok else missed + 1
            self.why = f"{self.why} ({self.misses} looks in a row)"
            return 16
        finally:
            self._running = False

    async def stop(self) -> None:
        """End the run and DHCP (started again at the next open)."""
        if self._stop is not None:
            self._stop.set()
        task, self._dhcp_task = self._dhcp_task, None
        if task is not None:
            await self.dhcp.stop()
            await asyncio.gather(task, return_exceptions=True)
