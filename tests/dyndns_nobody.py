"""A dynamic DNS provider and verifier that must never be asked (tests that set no address)."""

from __future__ import annotations

from failberry.dyndns.base import Record


class Nobody:
    """Neither provider nor verifier is ever asked: no address is set in the test."""

    kind = "test"

    def update(self, record: Record, address: str, source: str | None) -> object:
        raise AssertionError("no update expected")

    def lookup(self, record: Record) -> frozenset[str]:
        raise AssertionError("no lookup expected")
