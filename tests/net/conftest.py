"""Fixtures for the namespace tests: a topology per test, and the network part running in the
Pi namespace (`python -m failberry.net run`) with its status readable as JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from topology import PY, Topology, unique_prefix


@pytest.fixture
def topo() -> Iterator[Topology]:
    """The namespaces, removed afterwards whatever happened."""
    t = Topology(unique_prefix())
    try:
        t.up()
        yield t
    finally:
        t.down()


class Part:
    """The network part running in the Pi namespace."""

    def __init__(self, topo: Topology, tmp: Path, cfg: str) -> None:
        self.tmp = tmp
        (tmp / "failberry.toml").write_text(cfg)
        self.status_file = tmp / "status.json"
        self.log = tmp / "net.log"
        with self.log.open("w") as log:
            self.proc = topo.spawn("pi", [
                PY, "-m", "failberry.net", "run", "-c", str(tmp / "failberry.toml"),
                "--state-dir", str(tmp / "state"), "--usage-file", str(tmp / "usage.json"),
                "--status-file", str(self.status_file)], stdout=log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any]:
        """The part's last status report."""
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return {}

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> float:
        """Wait until the status satisfies `pred`; the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            st = self.status()
            if st and pred(st):
                return time.monotonic() - start
            assert self.proc.poll() is None, f"network part died:\n{self.log.read_text()}"
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; status {self.status()}\n"
                             f"{self.log.read_text()[-3000:]}")

    def active(self, name: str | None, timeout: float = 15) -> float:
        """Wait for this active uplink."""
        return self.wait(lambda s: s.get("active_uplink") == name, timeout, f"active={name}")

    def stop(self) -> int:
        """SIGTERM, as systemd would; the exit status."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def start_part(topo: Topology, tmp_path: Path) -> Callable[[str], Part]:
    """Start the part with a config text."""
    def start(cfg: str) -> Part:
        return Part(topo, tmp_path, cfg)
    return start
