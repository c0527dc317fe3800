"""Desired network state, computed by pure functions from config and link state.

Everything failberry adds is recognisable as its own, so clean-up removes exactly that:
- routing tables 2000 (the active default) and 2001.. (one per uplink, its own default);
- policy rules at priorities 10000-10199;
- iptables chains named `fb-*` in filter, nat and mangle, and the one jump to each from a
  built-in chain.

Routing: traffic sourced from an uplink's address (and so every probe) looks up that uplink's
table; everything else first consults `main` ignoring its default routes (connected and LAN
routes stay as the system has them), then table 2000, whose single default route names the
active uplink. A switch is one `route replace` in table 2000.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from failberry.config import Config, FailoverMode

TABLE_ACTIVE = 2000
TABLE_BASE = 2001
PRIO_SOURCE_BASE = 10010  # + 10 per uplink: `from ADDR lookup TABLE`
PRIO_MAIN = 10050  # `lookup main suppress_prefixlength 0`
PRIO_ACTIVE = 10100  # `lookup 2000`
PRIO_RANGE = range(10000, 10200)
MAIN_TABLE = 254

CHAIN_PREFIX = "fb-"
CHAIN_INPUT = "fb-input"
CHAIN_FORWARD = "fb-forward"
CHAIN_MOBILE_OUT = "fb-mobile-out"
CHAIN_MOBILE_IN = "fb-mobile-in"
CHAIN_NAT = "fb-postrouting"
CHAIN_MSS = "fb-mss"
CHAIN_HEALTH = "fb-health"  # counts the health endpoint's traffic on a metered uplink
CHAIN_OUTPUT = "fb-output"  # the Pi's own packets out (health answers, for the count)
MARK_MASK = 0x00FF0000  # connmark bits naming the LAN device a mobile flow belongs to
ALL_DEVICES = "*"

Rule = dict[str, Any]  # python-iptables' `iptc.easy` rule dictionary


@dataclass(frozen=True)
class UplinkSpec:
    """An uplink as config describes it."""

    name: str
    interface: str
    priority: int
    table: int
    rule_priority: int
    gateway: str = ""  # configured next hop; empty: learned, the peer, or on-link
    mss_clamp: bool = False
    metered: bool = False


@dataclass(frozen=True)
class LinkState:
    """An interface as netlink shows it now."""

    present: bool = False
    carrier: bool = False
    address: str | None = None
    peer: str | None = None  # point-to-point peer (ppp)
    learned_gateway: str | None = None  # a default route in `main` through it (DHCP client)
    # Interface byte counters, for status only (never part of a change comparison).
    rx_bytes: int | None = field(default=None, compare=False)
    tx_bytes: int | None = field(default=None, compare=False)

    @property
    def usable(self) -> bool:
        """Present, carrier, and an address."""
        return self.present and self.carrier and self.address is not None


@dataclass(frozen=True)
class RouteSpec:
    """A default route in one of our tables."""

    table: int
    interface: str
    gateway: str | None


@dataclass(frozen=True)
class RuleSpec:
    """A policy rule at one of our priorities."""

    priority: int
    table: int
    src: str | None = None
    suppress_prefixlen: int | None = None
    fwmark: int | None = None
    fwmask: int | None = None


@dataclass(frozen=True)
class ChainSpec:
    """One of our iptables chains, all of its rules, and where it is jumped to from."""

    table: str
    name: str
    rules: tuple[Rule, ...]
    hook: str  # the built-in chain that jumps here; "" for chains reached from ours


@dataclass(frozen=True)
class Device:
    """A LAN device the mobile link accounts for: `key` as config names it."""

    key: str
    mark: int

    def match(self) -> Rule:
        """The iptables match that picks its packets leaving the LAN."""
        if self.key == ALL_DEVICES:
            return {}
        if ":" in self.key and len(self.key) == 17:
            return {"mac": {"mac-source": self.key}}
        return {"src": self.key}


@dataclass(frozen=True)
class NetPlan:
    """Everything failberry wants in the kernel right now."""

    routes: tuple[RouteSpec, ...]
    rules: tuple[RuleSpec, ...]
    chains: tuple[ChainSpec, ...]
    sysctls: Mapping[str, str] = field(default_factory=dict)


def uplinks(cfg: Config) -> list[UplinkSpec]:
    """The uplinks this config runs, in priority order (sidecar: only the mobile one)."""
    out = []
    w, m = cfg.uplink.wired, cfg.uplink.mobile
    if cfg.failover.mode is FailoverMode.GATEWAY and w.interface:
        out.append(UplinkSpec("wired", w.interface, w.priority, 0, 0,
                              w.gateway if w.address != "dhcp" else ""))
    out.append(UplinkSpec("mobile", m.interface, m.priority, 0, 0, "", m.mss_clamp, True))
    out.sort(key=lambda u: (u.priority, u.name))
    return [UplinkSpec(u.name, u.interface, u.priority, TABLE_BASE + i,
                       PRIO_SOURCE_BASE + 10 * i, u.gateway, u.mss_clamp, u.metered)
            for i, u in enumerate(out)]


def devices(cfg: Config) -> list[Device]:
    """The accounted devices: the allowlist, or one catch-all when everyone is allowed."""
    keys = list(cfg.failover.allowed_devices) or [ALL_DEVICES]
    for k in cfg.failover.critical_devices:
        if k not in keys and ALL_DEVICES not in keys:
            keys.append(k)
    return [Device(k, (i + 1) << 16) for i, k in enumerate(keys[:255])]


def next_hop(up: UplinkSpec, link: LinkState) -> str | None:
    """The gateway for the uplink's default route: configured, learned, the ppp peer, or none
    (on-link)."""
    return up.gateway or link.learned_gateway or link.peer or None


def plan(cfg: Config, links: Mapping[str, LinkState], active: str | None,
         over_cap: bool = False, leaving: str | None = None) -> NetPlan:
    """The whole desired state for these links, this active uplink and the data-cap state.
    `leaving`: the uplink a switch moves away from; its LAN traffic is still let out (the
    bridge filter written before the route moves, so no packet meets a REJECT mid-switch)."""
    from failberry.net import inbound

    ups = uplinks(cfg)
    routes, rules = inbound.mark_routing(cfg, ups, dict(links))
    rules += [RuleSpec(PRIO_MAIN, MAIN_TABLE, suppress_prefixlen=0),
              RuleSpec(PRIO_ACTIVE, TABLE_ACTIVE)]
    sysctls = {"net/ipv4/ip_forward": "1"}
    if inbound.lan_return(cfg):
        # Connections from outside arrive on the LAN (the main router's port forward); the
        # main table routes their sources out of the mobile link: strict mode would drop them.
        sysctls[f"net/ipv4/conf/{cfg.lan.interface}/rp_filter"] = "2"
    for up in ups:
        link = links.get(up.interface, LinkState())
        if link.present:
            # Loose reverse-path filtering: replies to probes arrive on an uplink the main
            # table would not route back through; strict mode would drop them.
            sysctls[f"net/ipv4/conf/{up.interface}/rp_filter"] = "2"
        if not link.usable:
            continue
        hop = next_hop(up, link)
        routes.append(RouteSpec(up.table, up.interface, hop))
        assert link.address is not None
        rules.append(RuleSpec(up.rule_priority, up.table, src=link.address))
        if up.name == active:
            routes.append(RouteSpec(TABLE_ACTIVE, up.interface, hop))
    rules.sort(key=lambda r: r.priority)
    return NetPlan(tuple(routes), tuple(rules), firewall(cfg, ups, active, over_cap, leaving),
                   sysctls)


def closed(cfg: Config, over_cap: bool = False) -> tuple[ChainSpec, ...]:
    """The filter chains a clean stop leaves: the uplinks closed as when running, and no LAN
    traffic forwarded to any uplink (there is no NAT any more)."""
    return tuple(c for c in firewall(cfg, uplinks(cfg), None, over_cap, forwards=False)
                 if c.table == "filter")


def firewall(cfg: Config, ups: list[UplinkSpec], active: str | None,
             over_cap: bool, leaving: str | None = None, *, forwards: bool = True
             ) -> tuple[ChainSpec, ...]:
    """failberry's iptables chains for these uplinks and this active uplink (and the one a
    switch is leaving, while the route still points at it). `forwards`: with the port
    forwards (at the top of `fb-forward`) and the reply-path marks."""
    from failberry.net import inbound

    lan = cfg.lan.interface
    inp: list[Rule] = health_input_rules(cfg, ups)
    jump, inbound_chains = inbound.forward_chains(cfg, ups) if forwards else ([], [])
    fwd: list[Rule] = jump
    nat: list[Rule] = []
    mss: list[Rule] = []
    for up in ups:
        i = up.interface
        inp.append({"in-interface": i, "conntrack": {"ctstate": "RELATED,ESTABLISHED"},
                    "target": "ACCEPT"})
        inp += [{"in-interface": i, "protocol": "tcp", "tcp": {"dport": str(p)},
                 "target": "ACCEPT"} for p in cfg.firewall.allow_tcp]
        inp += [{"in-interface": i, "protocol": "udp", "udp": {"dport": str(p)},
                 "target": "ACCEPT"} for p in cfg.firewall.allow_udp]
        inp.append({"in-interface": i, "target": "DROP"})
        back = CHAIN_MOBILE_IN if up.metered else "ACCEPT"
        fwd.append({"in-interface": i, "out-interface": lan,
                    "conntrack": {"ctstate": "RELATED,ESTABLISHED"}, "target": back})
        fwd.append({"in-interface": i, "target": "DROP"})
        nat.append({"out-interface": i, "target": "MASQUERADE"})
        if up.mss_clamp:
            for d in ("out-interface", "in-interface"):
                mss.append({d: i, "protocol": "tcp", "tcp": {"tcp-flags": ["SYN,RST", "SYN"]},
                            "target": {"TCPMSS": {"clamp-mss-to-pmtu": ""}}})
    for up in ups:
        i = up.interface
        if up.name not in (active, leaving):
            # The LAN may only leave through the active uplink (and, mid-switch, the one
            # being left, which the route still names until it is replaced).
            fwd.append({"in-interface": lan, "out-interface": i, "target": "REJECT"})
            continue
        # A flow whose NAT binding was deleted on a switch shows up as a mid-stream packet
        # with a fresh conntrack entry: reset it so the client reconnects at once.
        fwd.append({"in-interface": lan, "out-interface": i, "protocol": "tcp",
                    "tcp": {"syn": "!"}, "conntrack": {"ctstate": "NEW"},
                    "target": {"REJECT": {"reject-with": "tcp-reset"}}})
        fwd.append({"in-interface": lan, "out-interface": i,
                    "target": CHAIN_MOBILE_OUT if up.metered else "ACCEPT"})
    chains = [ChainSpec("filter", CHAIN_INPUT, tuple(inp), "INPUT"),
              ChainSpec("filter", CHAIN_FORWARD, tuple(fwd), "FORWARD")]
    chains += inbound_chains
    if any(u.metered for u in ups):
        out_rules, in_rules = metered_rules(cfg, over_cap)
        chains += [ChainSpec("filter", CHAIN_MOBILE_OUT, out_rules, ""),
                   ChainSpec("filter", CHAIN_MOBILE_IN, in_rules, "")]
    if forwards:
        nat += inbound.forward_snat(cfg, ups)
    chains += health_chains(cfg, ups)
    chains.append(ChainSpec("nat", CHAIN_NAT, tuple(nat), "POSTROUTING"))
    chains.append(ChainSpec("mangle", CHAIN_MSS, tuple(mss), "FORWARD"))
    if forwards:
        if cfg.forward:
            chains.append(ChainSpec("nat", inbound.CHAIN_DNAT, inbound.dnat_rules(cfg, ups),
                                    "PREROUTING"))
        chains += inbound.mark_chains(cfg, ups)
    return tuple(chains)


# -- health-check bytes: DNS failover services poll the health port over the mobile link every
# 10-30 s; those bytes count against the data cap without any LAN device making them. Both
# directions pass through `fb-health` (one RETURN rule: its counter is the total), from the
# first rules of `fb-input` (before the ESTABLISHED accept) and from `fb-output`.


def health_input_rules(cfg: Config, ups: list[UplinkSpec]) -> list[Rule]:
    """`fb-input`'s first rules: the health port's packets in on a metered uplink."""
    return [{"in-interface": up.interface, "protocol": "tcp",
             "tcp": {"dport": str(cfg.health.port)}, "target": CHAIN_HEALTH}
            for up in ups if up.metered]


def health_chains(cfg: Config, ups: list[UplinkSpec]) -> list[ChainSpec]:
    """`fb-health` (the counter) and `fb-output` (hooked into OUTPUT: the answers)."""
    metered = [up for up in ups if up.metered]
    if not metered:
        return []
    out: tuple[Rule, ...] = tuple(
        {"out-interface": up.interface, "protocol": "tcp",
         "tcp": {"sport": str(cfg.health.port)}, "target": CHAIN_HEALTH} for up in metered)
    return [ChainSpec("filter", CHAIN_HEALTH, ({"target": "RETURN"},), ""),
            ChainSpec("filter", CHAIN_OUTPUT, out, "OUTPUT")]


HEALTH_COUNTER = (CHAIN_HEALTH, 0)  # (chain, rule index) of the health-check byte counter


def metered_rules(cfg: Config, over_cap: bool) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """LAN->mobile: the allowlist, with a connmark and a counting rule per device; past the
    cap, only critical devices. Mobile->LAN: a counting rule per device mark."""
    critical = set(cfg.failover.critical_devices)
    out: list[Rule] = []
    back: list[Rule] = []
    for dev in devices(cfg):
        mark = f"{dev.mark:#x}/{MARK_MASK:#x}"
        back.append({"connmark": {"mark": mark}, "target": "ACCEPT"})
        if over_cap and dev.key not in critical:
            continue
        if dev.key == ALL_DEVICES and over_cap:
            continue
        out.append({**dev.match(), "target": {"CONNMARK": {"set-xmark": mark}}})
        out.append({**dev.match(), "target": "ACCEPT"})
    out.append({"target": "REJECT"})
    back.append({"target": "ACCEPT"})
    return tuple(out), tuple(back)


def counter_keys(cfg: Config, over_cap: bool) -> dict[str, tuple[tuple[str, int], ...]]:
    """Where each device's bytes are counted: (chain, rule index) of its upload and download
    rules, as laid out by `metered_rules`."""
    critical = set(cfg.failover.critical_devices)
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    idx = 0
    for n, dev in enumerate(devices(cfg)):
        where = [(CHAIN_MOBILE_IN, n)]
        if not (over_cap and (dev.key not in critical or dev.key == ALL_DEVICES)):
            where.append((CHAIN_MOBILE_OUT, idx + 1))
            idx += 2
        out[dev.key] = tuple(where)
    return out


def is_ours_priority(priority: int | None) -> bool:
    """A policy rule priority failberry owns."""
    return priority is not None and priority in PRIO_RANGE
