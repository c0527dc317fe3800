"""The fake stick's Ethernet side for the `ncm`/`ecm` tests: a veth stands for the stick's
network interface (the rig puts one end, `wwan0`, in the test's Pi namespace and the other,
`isp0`, in an ISP namespace). A bearer brought up by AT puts the gateway address on `isp0`
and starts dnsmasq there as the DHCP server; bearer down stops both (with the vendor URC);
a wedge stops both silently, leaving the Pi's side up with its old address."""

from __future__ import annotations

import subprocess
from typing import Any

URCS = {"huawei": ('^NDISSTAT: 1,,,"IPV4"', '^NDISSTAT: 0,33,,"IPV4"'),
        "zte": ("+ZECMCALL: CONNECT", "+ZECMCALL: DISCONNECT"),
        "generic": ("+CGEV: ME PDN ACT 1", "+CGEV: NW DEACT 1")}


class Bearer:
    """scenario["bearer"] = {"ns": ISP namespace, "if": "isp0", "gw": "10.99.0.1/24",
    "range": "10.99.0.50,10.99.0.60", "dir": lease-file directory, "vendor": ...}"""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.up = False
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.ups = 0
        self.downs = 0

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.spec["ns"], *args], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def command(self, up: str) -> tuple[bool, str | None] | None:
        """(ok, URC to send after OK) for a bearer command, None if it is not one."""
        vendor = self.spec.get("vendor", "huawei")
        on, off = URCS[vendor]
        if up.startswith("AT^NDISDUP=1,1") or up in ("AT+ZECMCALL=1", "AT+CGACT=1,1"):
            self.start()
            return True, on
        if up in ("AT^NDISDUP=1,0", "AT+ZECMCALL=0", "AT+CGACT=0,1"):
            was = self.up
            self.stop()
            return True, off if was else None
        return None

    def start(self) -> None:
        if self.up:
            return
        self.up = True
        self.ups += 1
        s = self.spec
        self.ip("addr", "replace", s["gw"], "dev", s["if"])
        self.dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", s["ns"], "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
             "--port=0", "--no-resolv", "--no-ping", "--bind-interfaces",
             f"--interface={s['if']}",
             "--user=root", f"--dhcp-range={s['range']},255.255.255.0,2m",
             f"--dhcp-option=3,{s['gw'].split('/')[0]}",
             f"--dhcp-leasefile={s['dir']}/dnsmasq.leases", "--pid-file="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if not self.up:
            return
        self.up = False
        self.downs += 1
        if self.dnsmasq is not None:
            self.dnsmasq.terminate()
            self.dnsmasq.wait(5)
            self.dnsmasq = None
        self.ip("addr", "flush", "dev", self.spec["if"])
