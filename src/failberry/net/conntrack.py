"""Forget the flows NATed through an uplink that is no longer used, so their clients reconnect at
once through the new one instead of sending into a NAT binding that points at the old address.
Every other flow (the Pi's own, those through the surviving uplink) is left alone."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Protocol

from failberry.errors import CommandFailed

LOG = logging.getLogger(__name__)

_DELETED = re.compile(r"(\d+) flow entries have been deleted")


class FlowFlusher(Protocol):
    """Deletes conntrack entries."""

    async def flush_nat(self, address: str) -> int:
        """Delete the source-NATed flows whose reply goes to `address`; how many."""


class ConntrackTool:
    """The `conntrack` program (conntrack-tools), talking ctnetlink."""

    def __init__(self, program: str = "conntrack") -> None:
        self.program = program

    async def flush_nat(self, address: str) -> int:
        """Delete the source-NATed flows whose reply goes to `address`; how many."""
        # --src-nat: only flows we rewrote; --reply-dst: the ones rewritten to this uplink.
        argv = [self.program, "-D", "--src-nat", "--reply-dst", address]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        text = err.decode(errors="replace")
        m = _DELETED.search(text)
        # conntrack exits 1 when nothing matched; that is not a failure here.
        if m is None or proc.returncode not in (0, 1):
            raise CommandFailed(argv, proc.returncode or 0, text)
        count = int(m.group(1))
        LOG.info("deleted %d conntrack entries NATed to %s", count, address)
        return count
