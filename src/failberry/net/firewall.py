"""failberry's iptables chains through python-iptables (libiptc: the legacy x_tables backend,
what `iptables-legacy -S` shows).

Each table is changed in one libiptc transaction (autocommit off, one commit): the kernel swaps
the whole table at once, so a switch never leaves a half-written chain in place. A chain whose
rules already equal the plan is not touched, so its byte counters keep counting.

The tables are written nat first, then filter, then mangle: whatever the filter lets out is
already masqueraded (a LAN packet must never leave with its private source)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from failberry.errors import FailberryError
from failberry.net.plan import CHAIN_PREFIX, ChainSpec

LOG = logging.getLogger(__name__)

TABLES = ("nat", "filter", "mangle")
BUILTINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
            "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
            "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")}


class FirewallError(FailberryError):
    """An iptables change failed; names the table and what was being done."""

    def __init__(self, table: str, what: str, error: Exception) -> None:
        super().__init__(f"iptables (legacy) table {table}: {what}: {error}")


class Firewall(Protocol):
    """What the network part needs from the packet filter."""

    def sync(self, chains: Sequence[ChainSpec], tables: Sequence[str] = TABLES) -> list[str]:
        """Make our chains in these tables equal to these; the changes made."""

    def clean(self, tables: Sequence[str] = TABLES) -> list[str]:
        """Remove every chain we own in these tables and every jump to it."""

    def counters(self, table: str, chain: str) -> list[tuple[int, int]]:
        """(packets, bytes) of each rule of a chain; empty if it does not exist."""


class IptcFirewall:
    """The real one: python-iptables in the calling process's network namespace."""

    def __init__(self) -> None:
        from failberry.net.iptclib import iptc

        self._iptc = iptc
        self._easy = iptc.easy

    def _table(self, name: str) -> Any:
        t = self._iptc.Table(name)
        t.autocommit = False
        t.refresh()  # see what the kernel has now, including changes made by hand
        return t

    def sync(self, chains: Sequence[ChainSpec], tables: Sequence[str] = TABLES) -> list[str]:
        """Make our chains in these tables (in this order) equal to these; the changes made."""
        changes: list[str] = []
        for tname in tables:
            specs = [c for c in chains if c.table == tname]
            changes += self._in_transaction(tname, "sync",
                                            lambda t, s=specs: self._sync_table(t, s))
        return changes

    def clean(self, tables: Sequence[str] = TABLES) -> list[str]:
        """Remove every chain we own in these tables and every jump to it."""
        changes: list[str] = []
        for tname in tables:
            changes += self._in_transaction(tname, "clean", lambda t: self._sync_table(t, []))
        return changes

    def counters(self, table: str, chain: str) -> list[tuple[int, int]]:
        """(packets, bytes) of each rule of a chain; empty if it does not exist."""
        try:
            t = self._table(table)
        except self._iptc.IPTCError as e:
            raise FirewallError(table, f"read counters of {chain}", e) from e
        try:
            if not t.is_chain(chain):
                return []
            return [tuple(r.get_counters()) for r in self._iptc.Chain(t, chain).rules]
        except self._iptc.IPTCError as e:
            raise FirewallError(table, f"read counters of {chain}", e) from e
        finally:
            t.autocommit = True

    def _in_transaction(self, tname: str, what: str, body: Any) -> list[str]:
        try:
            t = self._table(tname)
        except self._iptc.IPTCError as e:
            raise FirewallError(tname, what, e) from e
        try:
            changes: list[str] = body(t)
            if changes:
                t.commit()
            return changes
        except self._iptc.IPTCError as e:
            raise FirewallError(tname, what, e) from e
        finally:
            t.autocommit = True

    def _same(self, have: Any, want: Any) -> bool:
        # Rule.__eq__ compares raw target buffers, which differ for MASQUERADE between what
        # we encode and what the kernel hands back; the decoded forms are canonical.
        a = self._easy.decode_iptc_rule(have)
        b = self._easy.decode_iptc_rule(want)
        a.pop("counters", None)
        b.pop("counters", None)
        return bool(a == b)

    def _sync_table(self, t: Any, specs: Sequence[ChainSpec]) -> list[str]:
        iptc = self._iptc
        tname = t.name
        changes = []
        names = {c.name for c in t.chains}
        for spec in specs:  # every chain exists before any rule jumps to it
            if spec.name not in names:
                t.create_chain(spec.name)
                changes.append(f"{tname}: created chain {spec.name}")
        for spec in specs:
            chain = iptc.Chain(t, spec.name)
            want = [self._easy.encode_iptc_rule(r) for r in spec.rules]
            have = chain.rules
            if len(have) != len(want) or any(not self._same(a, b)
                                             for a, b in zip(have, want, strict=True)):
                chain.flush()
                for rule in want:
                    chain.append_rule(rule)
                changes.append(f"{tname}: wrote {spec.name} ({len(want)} rules)")
        wanted = {s.name for s in specs}
        hooks = {s.name: s.hook for s in specs if s.hook}
        for builtin in BUILTINS[tname]:
            chain = iptc.Chain(t, builtin)
            jumps: dict[str, int] = {}
            for rule in list(chain.rules):
                target = rule.target.name
                if not target.startswith(CHAIN_PREFIX):
                    continue
                if hooks.get(target) == builtin and not jumps.get(target):
                    jumps[target] = 1
                    continue
                chain.delete_rule(rule)
                changes.append(f"{tname}: removed jump {builtin} -> {target}")
            for name, hook in hooks.items():
                if hook == builtin and not jumps.get(name):
                    chain.insert_rule(self._easy.encode_iptc_rule({"target": name}))
                    changes.append(f"{tname}: added jump {builtin} -> {name}")
        ours = [c for c in t.chains if c.name.startswith(CHAIN_PREFIX) and c.name not in wanted]
        for chain in ours:  # flush all first: they may jump to each other
            chain.flush()
        for chain in ours:
            t.delete_chain(chain.name)
            changes.append(f"{tname}: deleted chain {chain.name}")
        return changes
