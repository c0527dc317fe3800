"""Namespaces for inbound reachability: an outside host, a main router (sidecar layout), the
Pi and a LAN host. Also run as a script: `inbound_topo.py serve` (the LAN host's UDP 1194 and
TCP 443 servers, which answer with the address they saw), `inbound_topo.py myip [ADDRESS]`
(the outside "what is my address" service on 192.0.2.1:8080: the caller's address, or ADDRESS
as an operator's NAT would show it) and `inbound_topo.py run CONFIG STATE_DIR` (the real
supervisor with only the network part, health on 0.0.0.0).

Sidecar:
    outside 192.0.2.50 [inet] w0 203.0.113.254 -- wan0 203.0.113.1 [router] br0 192.168.1.1
        router: NAT out of wan0; tcp 9000 -> the Pi, udp 1194 -> the LAN host
        br0 -- eth0 [pi] 192.168.1.2, lan.gateway 192.168.1.1; br0 -- eth0 [host] 192.168.1.10
    [inet] m0 198.18.0.1 -- ppp0 198.18.0.2 [pi]   (the mobile link, point-to-point)
Gateway: no router; [inet] w0 203.0.113.254 -- eth1 203.0.113.2 [pi] eth0 -- eth0 [host];
    the host's default route is the Pi.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from topology import PY, Namespaces, run, unique_prefix

HERE = Path(__file__).resolve().parent
OUTSIDE = "192.0.2.50"
TARGET = "192.0.2.1"
ROUTER_WAN = "203.0.113.1"
PI_WIRED = "203.0.113.2"
PI_MOBILE = "198.18.0.2"
PI_LAN = "192.168.1.2"
HOST = "192.168.1.10"
NATTED = "203.0.113.77"  # the mobile address as the "what is my address" service shows it

CONFIG = """
[modem]
apn = "internet"
enabled = false
[lan]
interface = "eth0"
address = "192.168.1.2/24"
{lan_gateway}
[uplink.wired]
{wired}
probe_targets = ["icmp:192.0.2.1"]
probe_interval = "200ms"
down = 2
up = 2
[uplink.mobile]
interface = "ppp0"
public_address_url = "http://192.0.2.1:8080/ip"
probe_targets = ["icmp:192.0.2.1"]
probe_interval = "200ms"
down = 2
up = 2
[failover]
mode = "{mode}"
hold_down = "0s"
[firewall]
allow_tcp = [9000]
[recovery]
reboots_per_day = 0
reboot_command = ["true"]
[paths]
run_dir = "{tmp}/run"
state_dir = "{tmp}/state"

[[forward]]
protocol = "udp"
port = 1194
to = "192.168.1.10"

[[forward]]
protocol = "tcp"
port = 443
to = "192.168.1.10"
"""


def config_text(mode: str, tmp: Path) -> str:
    """The Pi's config for this layout."""
    if mode == "sidecar":
        return CONFIG.format(mode=mode, tmp=tmp, lan_gateway='gateway = "192.168.1.1"',
                             wired="")
    return CONFIG.format(mode=mode, tmp=tmp, lan_gateway="",
                         wired='interface = "eth1"\naddress = "203.0.113.2/24"\n'
                               'gateway = "203.0.113.254"')


class Inbound(Namespaces):
    """Build with `up()`, always `down()`."""

    def __init__(self, mode: str) -> None:
        prefix = unique_prefix("in")
        names = ["inet", "pi", "host"] + (["router"] if mode == "sidecar" else [])
        super().__init__({k: f"{prefix}{k}" for k in names})
        self.mode = mode

    def _veth(self, a: str, ai: str, b: str, bi: str) -> None:
        run(["ip", "-n", self.ns[a], "link", "add", ai, "type", "veth", "peer", "name", bi,
             "netns", self.ns[b]])

    def up(self) -> None:
        """Namespaces, links, addresses, the router's NAT, the LAN host's servers."""
        for name in self.ns.values():
            run(["ip", "netns", "add", name])
            run(["ip", "netns", "exec", name, "sysctl", "-qw",
                 "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
            run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        self._veth("pi", "ppp0", "inet", "m0")
        self.sh("inet", f"ip addr add {OUTSIDE}/32 dev lo; ip addr add {TARGET}/32 dev lo;"
                        f"ip addr add 198.18.0.1 peer {PI_MOBILE}/32 dev m0; ip link set m0 up")
        if self.mode == "sidecar":
            self._veth("router", "wan0", "inet", "w0")
            self._veth("router", "rp", "pi", "eth0")
            self._veth("router", "rh", "host", "eth0")
            self.sh("router", "ip link add br0 type bridge; ip link set rp master br0;"
                              "ip link set rh master br0; ip addr add 192.168.1.1/24 dev br0;"
                              f"ip addr add {ROUTER_WAN}/24 dev wan0;"
                              "for i in br0 rp rh wan0; do ip link set $i up; done;"
                              "ip route add default via 203.0.113.254;"
                              "sysctl -qw net.ipv4.ip_forward=1;"
                              "iptables-legacy -t nat -A POSTROUTING -o wan0 -j MASQUERADE;"
                              "iptables-legacy -t nat -A PREROUTING -i wan0 -p tcp --dport 9000"
                              f" -j DNAT --to-destination {PI_LAN};"
                              "iptables-legacy -t nat -A PREROUTING -i wan0 -p udp --dport 1194"
                              f" -j DNAT --to-destination {HOST}")
            self.sh("inet", "ip addr add 203.0.113.254/24 dev w0; ip link set w0 up")
            self.sh("pi", f"ip addr add {PI_LAN}/24 dev eth0; ip link set eth0 up;"
                          "ip route add default via 192.168.1.1")
            self.sh("host", f"ip addr add {HOST}/24 dev eth0; ip link set eth0 up;"
                            "ip route add default via 192.168.1.1")
        else:
            self._veth("pi", "eth1", "inet", "w0")
            self._veth("pi", "eth0", "host", "eth0")
            self.sh("inet", "ip addr add 203.0.113.254/24 dev w0; ip link set w0 up")
            self.sh("pi", f"ip addr add {PI_LAN}/24 dev eth0; ip addr add {PI_WIRED}/24 dev eth1;"
                          "ip link set eth0 up; ip link set eth1 up")
            self.sh("host", f"ip addr add {HOST}/24 dev eth0; ip link set eth0 up;"
                            f"ip route add default via {PI_LAN}")
        # The internet drops packets whose source does not belong to the link they come in
        # on (as operators do): a reply sent out of the wrong uplink does not arrive.
        self.sh("inet", "for i in all w0 m0; do sysctl -qw net.ipv4.conf.$i.rp_filter=1; done")
        self.sh("pi", f"ip addr add {PI_MOBILE} peer 198.18.0.1/32 dev ppp0; ip link set ppp0 up;"
                      "for t in filter nat mangle raw security; do "
                      "iptables-legacy -t $t -S >/dev/null; ip6tables-legacy -t $t -S >/dev/null;"
                      " done")
        p = self.spawn("host", [PY, str(HERE / "inbound_topo.py"), "serve"],
                       stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        # Sidecar: the operator NATs the mobile address (a 1:1 NAT to another address).
        nat = [NATTED] if self.mode == "sidecar" else []
        p = self.spawn("inet", [PY, str(HERE / "inbound_topo.py"), "myip", *nat],
                       stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def snapshot(self) -> dict[str, str]:
        """The Pi's rules, every routing table, and both legacy iptables, without counters."""
        out = {"rule": self.sh("pi", "ip rule"), "route": self.sh("pi", "ip route show table all")}
        for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
            save = self.sh("pi", tool)
            out[tool] = "\n".join(re.sub(r"\[\d+:\d+\]", "", line)
                                  for line in save.splitlines() if not line.startswith("#"))
        return out


# ---------------------------------------------------------------------------------------------
# The outside host's requests (call inside `Inbound.outside()`).


def get(addr: str, port: int, path: str, timeout: float = 3.0,
        source: str = OUTSIDE) -> tuple[int, bytes]:
    """An HTTP GET from the outside host's address (or `source`): (status, body)."""
    conn = http.client.HTTPConnection(addr, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def udp_ask(addr: str, port: int = 1194, timeout: float = 3.0) -> tuple[bytes, str]:
    """A datagram to addr:port from an unconnected socket: (answer, the address it came
    from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((OUTSIDE, 0))
        s.settimeout(timeout)
        s.sendto(b"hello", (addr, port))
        data, src = s.recvfrom(2048)
        return data, src[0]


def tcp_ask(addr: str, port: int = 443, timeout: float = 3.0) -> bytes:
    """A TCP exchange (which only completes when the replies come from `addr`)."""
    with socket.create_connection((addr, port), timeout, source_address=(OUTSIDE, 0)) as s:
        s.sendall(b"hello")
        return s.recv(2048)


def until(fn: object, timeout: float = 15.0) -> object:
    """Call `fn` until it returns without raising; its result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()  # type: ignore[operator]
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Scripts


async def _serve() -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.t.sendto(f"udp from {addr[0]}".encode(), addr)  # type: ignore[attr-defined]

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(f"tcp from {writer.get_extra_info('peername')[0]}".encode())
        await writer.drain()
        writer.close()

    await loop.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 1194))
    server = await asyncio.start_server(tcp, "0.0.0.0", 443)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _run(cfg_path: Path, state_dir: Path) -> None:
    from failberry import config, logsetup
    from failberry.bus import Bus
    from failberry.net import part as netpart
    from failberry.parts import Recipe
    from failberry.status import Status
    from failberry.supervisor import Supervisor

    logsetup.setup()
    cfg = config.load(cfg_path)

    def parts(c: config.Config, status: Status, bus: Bus) -> list[Recipe]:
        return [Recipe("network",
                       lambda s: netpart.build(c, s, state_dir, state_dir / "usage.json"))]

    sup = Supervisor(cfg, port=cfg.health.port, host="0.0.0.0", config_path=cfg_path,
                     parts=parts)
    asyncio.run(sup.run())


def _myip(fixed: str) -> None:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (fixed or self.client_address[0]).encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer((TARGET, 8080), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(_serve())
    elif sys.argv[1] == "myip":
        _myip(sys.argv[2] if len(sys.argv) > 2 else "")
    else:
        _run(Path(sys.argv[2]), Path(sys.argv[3]))
