"""Routes and policy rules through netlink (pyroute2 IPRoute): read link state, apply a plan
idempotently, and remove exactly what failberry owns (its tables and rule priorities)."""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from failberry.errors import FailberryError
from failberry.net.plan import (
    MAIN_TABLE,
    TABLE_ACTIVE,
    LinkState,
    RouteSpec,
    RuleSpec,
    is_ours_priority,
)

LOG = logging.getLogger(__name__)

IFF_LOWER_UP = 0x10000
SCOPE_LINK = 253
# Tables clean-up looks at: the active one and one per possible uplink.
CLEAN_TABLES = range(TABLE_ACTIVE, TABLE_ACTIVE + 10)


class Netlink(Protocol):
    """The part of pyroute2's IPRoute we use."""

    def get_links(self, *argv: Any, **kwarg: Any) -> Any: ...
    def get_addr(self, *argv: Any, **kwarg: Any) -> Any: ...
    def get_routes(self, *argv: Any, **kwarg: Any) -> Any: ...
    def get_rules(self, *argv: Any, **kwarg: Any) -> Any: ...
    def route(self, command: str, **kwarg: Any) -> Any: ...
    def rule(self, command: str, **kwarg: Any) -> Any: ...


class NetlinkError(FailberryError):
    """A netlink request failed; names what we asked for."""

    def __init__(self, what: str, error: Exception, table: int | None = None) -> None:
        super().__init__(f"netlink: {what}: {error}")
        self.table = table  # the routing table it was about, if one


class ApplyError(FailberryError):
    """Some route or rule changes failed (the others were made); names each failure."""

    def __init__(self, errors: list[NetlinkError], changes: list[str],
                 active_failed: bool = False) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}")
        self.errors = errors
        self.changes = changes  # what was changed nonetheless
        self.active_failed = active_failed  # table 2000 (the switch itself) is not as wanted


def observe(nl: Netlink, interfaces: Iterable[str]) -> dict[str, LinkState]:
    """The current state of these interfaces (absent ones too)."""
    wanted = set(interfaces)
    by_index: dict[int, str] = {}
    carrier: dict[str, bool] = {}
    counters: dict[str, tuple[int | None, int | None]] = {}
    for msg in nl.get_links():
        name = msg.get_attr("IFLA_IFNAME")
        if name in wanted:
            by_index[msg["index"]] = name
            carrier[name] = bool(msg["flags"] & IFF_LOWER_UP)
            stats = msg.get_attr("IFLA_STATS64")
            counters[name] = ((stats["rx_bytes"], stats["tx_bytes"]) if stats is not None
                              else (None, None))
    addr: dict[str, tuple[str, str | None]] = {}
    for msg in nl.get_addr(family=socket.AF_INET):
        name = by_index.get(msg["index"])
        if name is None or name in addr:
            continue
        local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        peer = msg.get_attr("IFA_ADDRESS")
        addr[name] = (local, peer if peer and peer != local else None)
    gw: dict[str, str] = {}
    for msg in nl.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
        if msg["dst_len"] == 0 and msg.get_attr("RTA_GATEWAY"):
            name = by_index.get(msg.get_attr("RTA_OIF"))
            if name is not None:
                gw.setdefault(name, msg.get_attr("RTA_GATEWAY"))
    out = {}
    for name in wanted:
        present = name in carrier
        a, peer = addr.get(name, (None, None))
        rx, tx = counters.get(name, (None, None))
        out[name] = LinkState(present, carrier.get(name, False), a, peer, gw.get(name),
                              rx_bytes=rx, tx_bytes=tx)
    return out


def _index(nl: Any, name: str) -> int | None:
    for msg in nl.get_links():
        if msg.get_attr("IFLA_IFNAME") == name:
            return int(msg["index"])
    return None


def _our_rules(nl: Netlink) -> list[Any]:
    return [r for r in nl.get_rules(family=socket.AF_INET)
            if is_ours_priority(r.get_attr("FRA_PRIORITY"))]


def _rule_key(msg: Any) -> RuleSpec:
    src = msg.get_attr("FRA_SRC") if msg["src_len"] else None
    sup = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
    mark = msg.get_attr("FRA_FWMARK")
    mask = msg.get_attr("FRA_FWMASK") if mark is not None else None
    return RuleSpec(msg.get_attr("FRA_PRIORITY"), msg.get_attr("FRA_TABLE") or msg["table"],
                    src, None if sup in (None, 0xFFFFFFFF) else sup, mark, mask)


def _rule_args(spec: RuleSpec) -> dict[str, Any]:
    args: dict[str, Any] = {"table": spec.table, "priority": spec.priority,
                            "family": socket.AF_INET}
    if spec.src:
        args.update(src=spec.src, src_len=32)
    if spec.suppress_prefixlen is not None:
        args["FRA_SUPPRESS_PREFIXLEN"] = spec.suppress_prefixlen
    if spec.fwmark is not None:
        args["fwmark"] = spec.fwmark
        if spec.fwmask is not None:
            args["fwmask"] = spec.fwmask
    return args


def _routes_in(nl: Netlink, table: int) -> list[Any]:
    return [r for r in nl.get_routes(family=socket.AF_INET, table=table)
            if (r.get_attr("RTA_TABLE") or r["table"]) == table]


class RouteApplier:
    """Applies the routing half of a plan; every change is logged with what and why."""

    def __init__(self, nl: Netlink) -> None:
        self.nl = nl

    def observe(self, interfaces: Iterable[str]) -> dict[str, LinkState]:
        """Current state of these interfaces."""
        try:
            return observe(self.nl, interfaces)
        except Exception as e:
            raise NetlinkError("read links, addresses and routes", e) from e

    def active_interface(self) -> str | None:
        """The interface the default route in table 2000 names (left by a run that crashed),
        or None."""
        try:
            for msg in _routes_in(self.nl, TABLE_ACTIVE):
                if msg["dst_len"] == 0 and msg.get_attr("RTA_OIF"):
                    idx = msg.get_attr("RTA_OIF")
                    return next((str(m.get_attr("IFLA_IFNAME")) for m in self.nl.get_links()
                                 if m["index"] == idx), None)
        except Exception as e:
            raise NetlinkError(f"read table {TABLE_ACTIVE}", e) from e
        return None

    def apply(self, routes: Iterable[RouteSpec], rules: Iterable[RuleSpec]) -> list[str]:
        """Make our tables and rules equal to these; the changes made. The active table
        first: its `route replace` is the switch itself. A failed change (a link that went
        away since it was read, a gateway that is not on-link) does not stop the others: they
        are all tried, then `ApplyError` names the failures."""
        errors: list[NetlinkError] = []
        changes = self._apply_routes(list(routes), errors)
        active_failed = bool(errors) and errors[0].table == TABLE_ACTIVE
        changes += self._apply_rules(list(rules), errors)
        if errors:
            raise ApplyError(errors, changes, active_failed)
        return changes

    def _apply_routes(self, routes: list[RouteSpec], errors: list[NetlinkError]) -> list[str]:
        changes: list[str] = []
        want: dict[int, RouteSpec] = {r.table: r for r in routes}
        for table in sorted(set(want) | set(CLEAN_TABLES), key=lambda t: t != TABLE_ACTIVE):
            try:
                self._apply_table(table, want.get(table), changes)
            except NetlinkError as e:
                e.table = table
                errors.append(e)
            except Exception as e:  # noqa: BLE001  a read failed: pyroute2 raises its own
                errors.append(NetlinkError(f"table {table}", e, table))
        return changes

    def _apply_table(self, table: int, spec: RouteSpec | None, changes: list[str]) -> None:
        have = _routes_in(self.nl, table)
        keep = None
        if spec is not None:
            idx = _index(self.nl, spec.interface)
            if idx is None:
                return
            for msg in have:
                if (msg["dst_len"] == 0 and msg.get_attr("RTA_OIF") == idx
                        and msg.get_attr("RTA_GATEWAY") == spec.gateway):
                    keep = msg
            if keep is None:
                args: dict[str, Any] = {"dst": "0.0.0.0/0", "oif": idx, "table": table,
                                        "family": socket.AF_INET}
                if spec.gateway:
                    args["gateway"] = spec.gateway
                else:
                    args["scope"] = SCOPE_LINK
                what = (f"table {table}: default {'via ' + spec.gateway if spec.gateway else ''} "
                        f"dev {spec.interface}")
                self._call("route", "replace", args, f"route replace {what}")
                changes.append(what)
                have = _routes_in(self.nl, table)
                keep = next((m for m in have if m["dst_len"] == 0
                             and m.get_attr("RTA_OIF") == idx), None)
        for msg in have:
            if keep is not None and _same_route(msg, keep):
                continue
            self._del_route(msg)
            changes.append(f"table {table}: removed {_describe(msg)}")

    def _apply_rules(self, rules: list[RuleSpec], errors: list[NetlinkError]) -> list[str]:
        changes: list[str] = []
        want = set(rules)
        seen: set[RuleSpec] = set()
        try:
            ours = _our_rules(self.nl)
        except Exception as e:  # noqa: BLE001  pyroute2 raises its own
            errors.append(NetlinkError("list rules", e))
            return changes
        for msg in ours:
            key = _rule_key(msg)
            if key in want and key not in seen:
                seen.add(key)
                continue
            try:
                self._call("rule", "del", _rule_args(key),
                           f"rule del {key.priority} {_describe_rule(key)}", gone_ok=True)
                changes.append(f"rule {key.priority}: removed {_describe_rule(key)}")
            except NetlinkError as e:
                errors.append(e)
        for spec in rules:
            if spec not in seen:
                try:
                    self._call("rule", "add", _rule_args(spec),
                               f"rule add {spec.priority} {_describe_rule(spec)}")
                    changes.append(f"rule {spec.priority}: added {_describe_rule(spec)}")
                except NetlinkError as e:
                    errors.append(e)
        return changes

    def clean(self) -> list[str]:
        """Remove every rule at our priorities and every route in our tables."""
        errors: list[NetlinkError] = []
        changes = self._apply_rules([], errors)
        for table in CLEAN_TABLES:
            try:
                self._apply_table(table, None, changes)
            except NetlinkError as e:
                errors.append(e)
            except Exception as e:  # noqa: BLE001  a read failed: pyroute2 raises its own
                errors.append(NetlinkError(f"table {table}", e))
        if errors:
            raise ApplyError(errors, changes)
        return changes

    def _del_route(self, msg: Any) -> None:
        args: dict[str, Any] = {"dst": f"{msg.get_attr('RTA_DST') or '0.0.0.0'}/{msg['dst_len']}",
                                "table": msg.get_attr("RTA_TABLE") or msg["table"],
                                "family": socket.AF_INET}
        if msg.get_attr("RTA_OIF"):
            args["oif"] = msg.get_attr("RTA_OIF")
        if msg.get_attr("RTA_GATEWAY"):
            args["gateway"] = msg.get_attr("RTA_GATEWAY")
        # The kernel matches the scope too: an on-link route (scope link) deleted without it
        # fails with ESRCH, which _call takes for "already gone".
        args["scope"] = msg["scope"]
        self._call("route", "del", args, f"route del table {args['table']} {_describe(msg)}",
                   gone_ok=True)

    def _call(self, kind: str, command: str, args: Mapping[str, Any], what: str,
              gone_ok: bool = False) -> None:
        try:
            getattr(self.nl, kind)(command, **args)
        except Exception as e:
            code = getattr(e, "code", None)
            # Deleting what the kernel already removed (its link went away since we read the
            # table) got us what we wanted.
            if gone_ok and code in (errno.ESRCH, errno.ENOENT):
                return
            raise NetlinkError(what, OSError(code, os.strerror(code)) if code else e) from e


def _same_route(a: Any, b: Any) -> bool:
    return bool(a["dst_len"] == b["dst_len"] and a.get_attr("RTA_DST") == b.get_attr("RTA_DST")
                and a.get_attr("RTA_OIF") == b.get_attr("RTA_OIF")
                and a.get_attr("RTA_GATEWAY") == b.get_attr("RTA_GATEWAY"))


def _describe(msg: Any) -> str:
    dst = f"{msg.get_attr('RTA_DST') or 'default'}"
    if msg["dst_len"]:
        dst += f"/{msg['dst_len']}"
    gw = msg.get_attr("RTA_GATEWAY")
    return f"{dst}{' via ' + gw if gw else ''} oif {msg.get_attr('RTA_OIF')}"


def _describe_rule(spec: RuleSpec) -> str:
    src = f"from {spec.src}" if spec.src else "from all"
    sup = (f" suppress_prefixlength {spec.suppress_prefixlen}"
           if spec.suppress_prefixlen is not None else "")
    mark = (f" fwmark {spec.fwmark:#x}/{spec.fwmask or 0xFFFFFFFF:#x}"
            if spec.fwmark is not None else "")
    return f"{src}{mark} lookup {spec.table}{sup}"
