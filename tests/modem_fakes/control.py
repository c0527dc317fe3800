"""The fakes' control socket: one JSON order per connection, one JSON line back."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def ctl(path: Path, order: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send `order` to the fake listening on the Unix socket `path`; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall((json.dumps(order) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
