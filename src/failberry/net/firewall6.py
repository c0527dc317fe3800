"""IPv6 on the uplinks, through ip6tables (legacy backend, what `ip6tables-legacy-save` shows).

failberry does not route IPv6 yet, so its IPv6 policy does not depend on which uplink is
active and is the same whatever happens: nothing reaches the Pi from an uplink except replies,
the neighbour discovery and DHCPv6 replies the uplink itself needs, and the configured ports;
nothing is forwarded from an uplink, and LAN IPv6 never leaves through one (rejected, so a LAN
client falls back to IPv4 at once instead of waiting for a timeout).

The chains are the IPv4 ones' names (`fb-input`, `fb-forward`) in the IPv6 filter table,
applied by the same one-commit diff as IPv4 (`IptcFirewall`), so applying twice changes
nothing and clean-up removes exactly them and their jumps."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from failberry.config import Config
from failberry.errors import FailberryError
from failberry.net import plan as netplan
from failberry.net.firewall import TABLES, Firewall, FirewallError, IptcFirewall
from failberry.net.plan import CHAIN_FORWARD, CHAIN_INPUT, ChainSpec, Rule

LOG = logging.getLogger(__name__)

# RFC 4861 router advertisement, neighbour solicitation and advertisement: hop limit 255 proves
# they were sent on the link itself (RFC 4890 4.4.1).
NDP_TYPES = (134, 135, 136)
MLD_QUERY = 130  # RFC 4890 4.4.1: snooping switches stop multicasting to a host that ignores it
LINK_LOCAL = "fe80::/10"
IF_INET6 = Path("/proc/net/if_inet6")  # absent when the kernel runs without IPv6


class Firewall6Error(FailberryError):
    """An ip6tables change failed; names what was being done."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"ip6tables (legacy) table filter: {what}: {error}")


def chains(cfg: Config) -> tuple[ChainSpec, ...]:
    """failberry's IPv6 filter chains for this config."""
    inp: list[Rule] = []
    fwd: list[Rule] = []
    for up in netplan.uplinks(cfg):
        i = up.interface
        inp.append({"in-interface": i, "conntrack": {"ctstate": "RELATED,ESTABLISHED"},
                    "target": "ACCEPT"})
        inp += [{"in-interface": i, "protocol": "icmpv6", "icmp6": {"icmpv6-type": str(t)},
                 "hl": {"hl-eq": "255"}, "target": "ACCEPT"} for t in NDP_TYPES]
        inp.append({"in-interface": i, "src": LINK_LOCAL, "protocol": "icmpv6",
                    "icmp6": {"icmpv6-type": str(MLD_QUERY)}, "target": "ACCEPT"})
        # A DHCPv6 reply comes from the server's link-local address to the client port, not
        # from the multicast address the request went to: conntrack cannot match it.
        inp.append({"in-interface": i, "src": LINK_LOCAL, "protocol": "udp",
                    "udp": {"sport": "547", "dport": "546"}, "target": "ACCEPT"})
        inp += [{"in-interface": i, "protocol": "tcp", "tcp": {"dport": str(p)},
                 "target": "ACCEPT"} for p in cfg.firewall.allow_tcp]
        inp += [{"in-interface": i, "protocol": "udp", "udp": {"dport": str(p)},
                 "target": "ACCEPT"} for p in cfg.firewall.allow_udp]
        inp.append({"in-interface": i, "target": "DROP"})
        fwd.append({"in-interface": i, "target": "DROP"})
        fwd.append({"out-interface": i,
                    "target": {"REJECT": {"reject-with": "icmp6-adm-prohibited"}}})
    return (ChainSpec("filter", CHAIN_INPUT, tuple(inp), "INPUT"),
            ChainSpec("filter", CHAIN_FORWARD, tuple(fwd), "FORWARD"))


class _Easy6:
    """`iptc.easy`'s rule codec, for IPv6 rules."""

    def __init__(self, easy: Any) -> None:
        self._easy = easy

    def encode_iptc_rule(self, rule: Rule) -> Any:
        return self._easy.encode_iptc_rule(rule, ipv6=True)

    def decode_iptc_rule(self, rule: Any) -> Rule:
        decoded: Rule = self._easy.decode_iptc_rule(rule, ipv6=True)
        return decoded


class Ip6tcFirewall(IptcFirewall):
    """python-iptables on the IPv6 filter table (libip6tc): the IPv4 applier's diff and single
    commit, with `Table6` and IPv6 rules. Only `filter` is touched: reading a table makes the
    kernel create it, so touching nat or mangle would leave empty tables behind."""

    def __init__(self, if_inet6: Path = IF_INET6) -> None:
        super().__init__()
        self._easy = _Easy6(self._easy)
        self._if_inet6 = if_inet6

    def _table(self, name: str) -> Any:
        t = self._iptc.Table6(name)
        t.autocommit = False
        t.refresh()
        return t

    def sync(self, chains: Sequence[ChainSpec], tables: Sequence[str] = TABLES) -> list[str]:
        """Make our IPv6 filter chains equal to these (if `tables` names filter)."""
        if "filter" not in tables:
            return []
        return self._filter("sync", [c for c in chains if c.table == "filter"])

    def clean(self, tables: Sequence[str] = TABLES) -> list[str]:
        """Remove every IPv6 chain we own and every jump to it (if `tables` names filter)."""
        if "filter" not in tables:
            return []
        return self._filter("clean", [])

    def _filter(self, what: str, specs: Sequence[ChainSpec]) -> list[str]:
        if not self._if_inet6.exists():
            return []  # no IPv6 in this kernel: nothing can arrive over it
        try:
            changes = self._in_transaction("filter", what,
                                           lambda t: self._sync_table(t, specs))
        except FirewallError as e:
            raise Firewall6Error(what, e.__cause__ or e) from e
        return [f"ip6 {c}" for c in changes]


class DualStackFirewall:
    """The part's firewall: the IPv4 chains it is given, plus this config's fixed IPv6 chains,
    applied, cleaned and repaired together. Each family is tried even when the other fails, so
    a broken ip6tables never keeps the IPv4 firewall and NAT from being applied."""

    def __init__(self, v4: Firewall, v6: Firewall, chains6: Sequence[ChainSpec]) -> None:
        self.v4 = v4
        self.v6 = v6
        self.chains6 = tuple(chains6)

    def sync(self, chains: Sequence[ChainSpec], tables: Sequence[str] = TABLES) -> list[str]:
        """Make our IPv4 chains equal to these and the IPv6 ones to the config's. With only
        some `tables` (the filter before a switch, the closed filter of a clean stop), IPv4
        only: the IPv6 chains do not depend on the active uplink and stay as they are."""
        if tuple(tables) != TABLES:
            return self.v4.sync(chains, tables)
        return _both(lambda: self.v4.sync(chains), lambda: self.v6.sync(self.chains6))

    def clean(self, tables: Sequence[str] = TABLES) -> list[str]:
        """Remove every chain we own, IPv4 and IPv6; with only some `tables` (a clean stop
        removing NAT), IPv4 only."""
        if tuple(tables) != TABLES:
            return self.v4.clean(tables)
        return _both(self.v4.clean, self.v6.clean)

    def counters(self, table: str, chain: str) -> list[tuple[int, int]]:
        """(packets, bytes) of each rule of an IPv4 chain; empty if it does not exist."""
        return self.v4.counters(table, chain)


def _both(*calls: Callable[[], list[str]]) -> list[str]:
    changes: list[str] = []
    error: FailberryError | None = None
    for call in calls:
        try:
            changes += call()
        except FailberryError as e:
            error = error or e
    if error is not None:
        for change in changes:  # the caller logs changes only when nothing failed
            LOG.info("%s (before the error below)", change)
        raise error
    return changes


def dual_stack(cfg: Config, v4: Firewall | None = None) -> DualStackFirewall:
    """The real IPv4 and IPv6 appliers for this config."""
    return DualStackFirewall(v4 if v4 is not None else IptcFirewall(), Ip6tcFirewall(),
                             chains(cfg))
