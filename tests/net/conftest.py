"""Fixtures for the namespace tests: a topology per test, and the network part running in the
Pi namespace (`python -m failberry.net run`) with its status readable as JSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from topology import Part, Topology, unique_prefix


@pytest.fixture
def topo() -> Iterator[Topology]:
    """The namespaces, removed afterwards whatever happened."""
    t = Topology(unique_prefix())
    try:
        t.up()
        yield t
    finally:
        t.down()


@pytest.fixture
def start_part(topo: Topology, tmp_path: Path) -> Callable[[str], Part]:
    """Start the part with a config text."""
    def start(cfg: str) -> Part:
        return Part(topo, tmp_path, cfg)
    return start
