"""Inbound reachability, as pure functions the plan uses: port forwards (`[[forward]]`) and
replies that leave by the path their connection came in on.

Port forwards: DNAT in `fb-prerouting` (nat PREROUTING) per forward and uplink, and in
`fb-inbound` (jumped to first from `fb-forward`; a chain of its own so a switch, which rewrites
`fb-forward`, keeps its counters) one rule per forward, uplink and direction that accepts (and
counts) exactly that forward's connections: `--ctstate DNAT` only matches connections our
DNAT made. In sidecar mode they are also source-NATed to the Pi's LAN address
(`fb-postrouting`): the LAN host's default route is the main router, and its replies must come
back to the Pi.

Reply paths: a new connection arriving on an uplink gets that uplink's path mark in its
connmark (`fb-pathmark`, mangle PREROUTING; bits 0x0F000000, apart from the per-device bits
of the metered link). Packets in the reply direction get the mark back: forwarded replies
from the LAN in mangle PREROUTING, the Pi's own replies in mangle OUTPUT (`fb-pathmark-out`,
which makes the kernel route them again). A policy rule per path (`fwmark MARK/0x0F000000
lookup TABLE`, priorities 10001..10009, before everything else of ours) sends them to that
uplink's table. In sidecar mode a connection to the Pi arriving on the LAN interface from
outside the LAN prefix (the main router's port forward) is marked for table 2009, whose
default route is `lan.gateway`."""

from __future__ import annotations

import ipaddress

from failberry.config import Config, FailoverMode, ForwardConfig, port_bounds
from failberry.net.plan import (
    TABLE_BASE,
    ChainSpec,
    LinkState,
    RouteSpec,
    Rule,
    RuleSpec,
    UplinkSpec,
)

PATH_MASK = 0x0F000000
LAN_PATH_MARK = 0x0F000000
TABLE_LAN_RETURN = 2009
PRIO_MARK_BASE = 10001  # + uplink index: `fwmark MARK/MASK lookup <its table>`
PRIO_LAN_RETURN = 10009
CHAIN_DNAT = "fb-prerouting"
CHAIN_PATHMARK = "fb-pathmark"
CHAIN_PATHMARK_OUT = "fb-pathmark-out"
CHAIN_FORWARDS = "fb-inbound"  # filter: the forwards' accepts, jumped to from fb-forward


def path_mark(up: UplinkSpec) -> int:
    """The connmark bits naming this uplink's path."""
    return (up.table - TABLE_BASE + 1) << 24


def _mark(value: int) -> str:
    return f"{value:#x}/{PATH_MASK:#x}"


def lan_return(cfg: Config) -> bool:
    """Whether connections arriving on the LAN from outside are answered via `lan.gateway`."""
    return cfg.failover.mode is FailoverMode.SIDECAR and bool(cfg.lan.gateway)


def forward_uplinks(fw: ForwardConfig, ups: list[UplinkSpec]) -> list[UplinkSpec]:
    """The uplinks a forward applies to: those named, or every one failberry owns."""
    return [u for u in ups if not fw.uplinks or u.name in fw.uplinks]


def _ports(text: str) -> str:
    first, last = port_bounds(text)
    return f"{first}:{last}" if last != first else str(first)


def dnat_rules(cfg: Config, ups: list[UplinkSpec]) -> tuple[Rule, ...]:
    """`fb-prerouting`: each forward's DNAT on each of its uplinks. A range moved to other
    ports is one rule per port (DNAT to a range would pick any port of it)."""
    out: list[Rule] = []
    for fw in cfg.forward:
        first, last = port_bounds(fw.port)
        t_first = port_bounds(fw.to_port)[0] if fw.to_port else first
        for up in forward_uplinks(fw, ups):
            base: Rule = {"in-interface": up.interface, "protocol": fw.protocol}
            if t_first == first:
                out.append({**base, fw.protocol: {"dport": _ports(fw.port)},
                            "target": {"DNAT": {"to-destination": fw.to}}})
                continue
            for p in range(first, last + 1):
                out.append({**base, fw.protocol: {"dport": str(p)},
                            "target": {"DNAT": {"to-destination":
                                                f"{fw.to}:{t_first + p - first}"}}})
    return tuple(out)


def forward_snat(cfg: Config, ups: list[UplinkSpec]) -> list[Rule]:
    """Sidecar mode: forwarded connections leave towards the LAN host from the Pi's LAN
    address, so the host answers the Pi (its default route is the main router, which would
    send the replies out of the wired link from another address)."""
    if cfg.failover.mode is not FailoverMode.SIDECAR:
        return []
    me = str(ipaddress.ip_interface(cfg.lan.address).ip)
    out: list[Rule] = []
    for fw in cfg.forward:
        if forward_uplinks(fw, ups):
            out.append({"out-interface": cfg.lan.interface, "dst": f"{fw.to}/32",
                        "protocol": fw.protocol,
                        fw.protocol: {"dport": _ports(fw.to_port or fw.port)},
                        "conntrack": {"ctstate": "DNAT"},
                        "target": {"SNAT": {"to-source": me}}})
    return out


def forward_chains(cfg: Config, ups: list[UplinkSpec]) -> tuple[list[Rule], list[ChainSpec]]:
    """The jump at the top of `fb-forward` and the `fb-inbound` chain (none without
    forwards)."""
    if not cfg.forward:
        return [], []
    return ([{"target": CHAIN_FORWARDS}],
            [ChainSpec("filter", CHAIN_FORWARDS, tuple(forward_filter(cfg, ups)), "")])


def forward_filter(cfg: Config, ups: list[UplinkSpec]) -> list[Rule]:
    """`fb-inbound`: per forward and uplink, its connections in (uplink to LAN host) and
    their replies out; both counted. Laid out as `forward_counters` says."""
    lan = cfg.lan.interface
    out: list[Rule] = []
    for fw in cfg.forward:
        ports = _ports(fw.to_port or fw.port)
        for up in forward_uplinks(fw, ups):
            out.append({"in-interface": up.interface, "out-interface": lan,
                        "dst": f"{fw.to}/32", "protocol": fw.protocol,
                        fw.protocol: {"dport": ports}, "conntrack": {"ctstate": "DNAT"},
                        "target": "ACCEPT"})
            out.append({"in-interface": lan, "out-interface": up.interface,
                        "src": f"{fw.to}/32", "protocol": fw.protocol,
                        fw.protocol: {"sport": ports},
                        "conntrack": {"ctstate": "DNAT", "ctdir": "REPLY"},
                        "target": "ACCEPT"})
    return out


def forward_counters(cfg: Config, ups: list[UplinkSpec]) -> dict[str, list[tuple[int, str]]]:
    """Where each forward is counted: (rule index in `fb-inbound`, "in" or "out")."""
    out: dict[str, list[tuple[int, str]]] = {}
    idx = 0
    for fw in cfg.forward:
        where = out.setdefault(fw.name, [])
        for _ in forward_uplinks(fw, ups):
            where += [(idx, "in"), (idx + 1, "out")]
            idx += 2
    return out


def mark_chains(cfg: Config, ups: list[UplinkSpec]) -> tuple[ChainSpec, ...]:
    """`fb-pathmark` (mangle PREROUTING) and `fb-pathmark-out` (mangle OUTPUT)."""
    lan = cfg.lan.interface
    arrive: list[Rule] = [{"in-interface": u.interface, "conntrack": {"ctstate": "NEW"},
                           "target": {"CONNMARK": {"set-xmark": _mark(path_mark(u))}}}
                          for u in ups]
    if lan_return(cfg):
        net = ipaddress.ip_interface(cfg.lan.address).network
        arrive.append({"in-interface": lan, "src": f"!{net}",
                       "addrtype": {"dst-type": "LOCAL"}, "conntrack": {"ctstate": "NEW"},
                       "target": {"CONNMARK": {"set-xmark": _mark(LAN_PATH_MARK)}}})
    restore = {"CONNMARK": {"restore-mark": "", "nfmask": f"{PATH_MASK:#x}",
                            "ctmask": f"{PATH_MASK:#x}"}}
    arrive.append({"in-interface": lan, "conntrack": {"ctdir": "REPLY"}, "target": restore})
    out: list[Rule] = [{"conntrack": {"ctdir": "REPLY"}, "target": restore}]
    return (ChainSpec("mangle", CHAIN_PATHMARK, tuple(arrive), "PREROUTING"),
            ChainSpec("mangle", CHAIN_PATHMARK_OUT, tuple(out), "OUTPUT"))


def mark_routing(cfg: Config, ups: list[UplinkSpec], links: dict[str, LinkState]
                 ) -> tuple[list[RouteSpec], list[RuleSpec]]:
    """The fwmark rules into each usable uplink's table, and the LAN return path's table and
    rule (sidecar with `lan.gateway`)."""
    rules = [RuleSpec(PRIO_MARK_BASE + u.table - TABLE_BASE, u.table, fwmark=path_mark(u),
                      fwmask=PATH_MASK)
             for u in ups if links.get(u.interface, LinkState()).usable]
    routes: list[RouteSpec] = []
    if lan_return(cfg):
        routes.append(RouteSpec(TABLE_LAN_RETURN, cfg.lan.interface, cfg.lan.gateway))
        rules.append(RuleSpec(PRIO_LAN_RETURN, TABLE_LAN_RETURN, fwmark=LAN_PATH_MARK,
                              fwmask=PATH_MASK))
    return routes, rules
