"""A link with real latency between two namespaces: two TUN devices and a relay process that
holds every packet for a fixed time before passing it on.

The kernel here has no sch_netem (and no module loading), and a veth pair queues the reply to
a probe before `sendto` returns; a mobile network answers tens of milliseconds later, after
every other probe of the round has been sent. This relay makes that happen in tests.

    python latency.py NS_A DEV_A NS_B DEV_B DELAY_MS

attaches to the persistent TUN devices DEV_A in namespace NS_A and DEV_B in NS_B (made with
`ip tuntap add mode tun`, see `tun_link`), prints "ready", and relays IP packets both ways,
each DELAY_MS after it was read (so the round trip across the link is twice that).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def tun_link(ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> list[list[str]]:
    """The commands that make the two ends (persistent, so addresses can be set before the
    relay attaches; they go away with their namespaces)."""
    return [["ip", "-n", ns, "tuntap", "add", "dev", dev, "mode", "tun"]
            for ns, dev in ((ns_a, dev_a), (ns_b, dev_b))]


def _attach(ns: str, dev: str) -> int:
    from pyroute2 import netns

    netns.setns(ns)  # the TUN device is looked up in the namespace we are in when attaching
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", dev.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def relay(a: int, b: int, delay: float) -> None:
    """Pass packets a->b and b->a, each `delay` seconds after it arrived; never returns."""
    queues: dict[int, collections.deque[tuple[float, bytes]]] = {
        a: collections.deque(), b: collections.deque()}  # keyed by the fd to write to
    other = {a: b, b: a}
    while True:
        now = time.monotonic()
        due = [q[0][0] for q in queues.values() if q]
        wait = max(0.0, min(due) - now) if due else None
        readable, _, _ = select.select([a, b], [], [], wait)
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                queues[other[fd]].append((now + delay, packet))
        for fd, q in queues.items():
            while q and q[0][0] <= now:
                # The device is down (a test's fault): the packet is lost, as on a wire.
                with contextlib.suppress(OSError):
                    os.write(fd, q.popleft()[1])


def main(argv: list[str]) -> int:
    ns_a, dev_a, ns_b, dev_b, delay_ms = argv
    a = _attach(ns_a, dev_a)
    b = _attach(ns_b, dev_b)
    print("ready", flush=True)
    relay(a, b, float(delay_ms) / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
