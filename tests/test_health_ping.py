"""`GET /ping`: 200 with a fixed body whenever the supervisor runs, whatever the uplinks and
the network part say (a DNS failover checker's test that a path reaches the Pi)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_health import supervisor, wait_for


@pytest.mark.timeout(60)
def test_ping_answers_while_health_fails(tmp_path: Path) -> None:
    with supervisor(tmp_path) as run:
        run.uplinks(mobile=False)
        wait_for(run, "/health", 503, 5)
        code, raw, headers = run.get("/ping")
        assert (code, raw) == (200, b"ok\n")
        assert headers["content-type"].startswith("text/plain")
        run.set(network_stall=True)  # the network part stops reporting altogether
        wait_for(run, "/health", 503, 3)
        assert run.get("/ping")[:2] == (200, b"ok\n")
        assert run.get("/ping", "HEAD")[0] == 200
        run.uplinks(mobile=True)
        run.set(network_stall=False)
        wait_for(run, "/health", 200, 5)
        assert run.get("/ping")[:2] == (200, b"ok\n")
