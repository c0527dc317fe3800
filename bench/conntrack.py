"""Conntrack flush and IPv6 firewall cost, in the namespace topology (tests/net/topology.py).

1. Flush: the LAN host opens N UDP flows through the wired NAT (real conntrack entries), then
   the flows NATed to the wired address are deleted, by failberry (ctnetlink, in-process,
   `NetlinkConntrack.flush_nat`) or by the tool failberry used before (`conntrack -D
   --src-nat --reply-dst`, a process per flush). Also timed: the same with nothing to delete.
2. Re-apply: one periodic reconcile's firewall sync when nothing changed, IPv4 alone
   (`IptcFirewall`) against IPv4 + IPv6 (`DualStackFirewall`), i.e. what IPv6 filtering adds
   every 5 s.

Run as root: .venv/bin/python bench/conntrack.py [-n 10] [--flows 1000]

Measured on the 2-core CI kind of machine, shared with other jobs (n=20, 1000 flows): flush
p50 65 ms (conntrack -D 41 ms; pyroute2's NFCTSocket codec, tried first, about 960 ms); nothing
to delete p50 20 ms (conntrack -D 16 ms, exiting with status 1); re-apply with nothing
changed p50 12.6 ms IPv4 alone, 24.4 ms with IPv6 (x1.94), once every 5 s.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "net"))

from topology import (
    LAN_HOST,
    PY,
    ROOT,
    SERVER,
    WIRED_ADDR,
    Topology,
    config_text,
    unique_prefix,
)

PI_SIDE = """
import asyncio, json, subprocess, sys, time
from failberry import config
from failberry.net import plan
from failberry.net.conntrack import NetlinkConntrack
from failberry.net.firewall import IptcFirewall
from failberry.net.firewall6 import dual_stack

cfg = config.load(sys.argv[1])
loop = asyncio.new_event_loop()  # one loop and its thread pool, as in the supervisor
ct = NetlinkConntrack()
v4, both = IptcFirewall(), dual_stack(cfg)
links = {"eth1": plan.LinkState(True, True, "203.0.113.2", None, "203.0.113.1"),
         "ppp0": plan.LinkState(True, True, "100.64.0.2", "100.64.0.1")}
chains = plan.plan(cfg, links, "wired").chains
for line in sys.stdin:
    what = line.strip()
    t0 = time.perf_counter()
    if what == "netlink":
        n = loop.run_until_complete(ct.flush_nat(sys.argv[2]))
    elif what == "tool":
        p = subprocess.run(["conntrack", "-D", "--src-nat", "--reply-dst", sys.argv[2]],
                           capture_output=True, text=True)
        n = int(p.stderr.split()[3]) if "have been deleted" in p.stderr else -p.returncode
    elif what == "sync4":
        n = len(v4.sync(chains))
    elif what == "sync46":
        n = len(both.sync(chains))
    print(json.dumps([time.perf_counter() - t0, n]), flush=True)
"""


def flows(topo: Topology, count: int) -> None:
    """`count` UDP flows from the LAN host, each to its own server port."""
    with topo.inside("lan"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.bind((LAN_HOST, 0))
        for port in range(20000, 20000 + count):
            s.sendto(b"x", (SERVER, port))
    time.sleep(0.2)


def table(rows: list[tuple[str, list[float], str]]) -> None:
    print(f"{'':44} {'n':>3} {'p50 ms':>9} {'max ms':>9}  note")
    for name, xs, note in rows:
        ms = [x * 1000 for x in xs]
        print(f"{name:44} {len(ms):>3} {statistics.median(ms):>9.2f} {max(ms):>9.2f}  {note}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--flows", type=int, default=1000)
    args = ap.parse_args()
    topo = Topology(unique_prefix("bench-ct"))
    tmp = Path(tempfile.mkdtemp(prefix="fb-bench-ct-"))
    (tmp / "failberry.toml").write_text(config_text())
    try:
        topo.up()
        subprocess.run(["ip", "netns", "exec", topo.ns["pi"], PY, "-m", "failberry.net",
                        "apply", "wired", "-c", str(tmp / "failberry.toml"), "--state-dir",
                        str(tmp / "state")], check=True, capture_output=True, cwd=ROOT)
        pi = subprocess.Popen(["ip", "netns", "exec", topo.ns["pi"], PY, "-c", PI_SIDE,
                               str(tmp / "failberry.toml"), WIRED_ADDR], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert pi.stdin is not None and pi.stdout is not None

        def ask(what: str) -> tuple[float, int]:
            assert pi.stdin is not None and pi.stdout is not None
            pi.stdin.write(what + "\n")
            pi.stdin.flush()
            secs, n = json.loads(pi.stdout.readline())
            return float(secs), int(n)

        res: dict[str, list[float]] = {}
        counts: dict[str, set[int]] = {}
        for _ in range(args.n):
            for how in ("netlink", "tool"):
                flows(topo, args.flows)
                for key in (how, how + " (nothing left)"):
                    secs, n = ask(how)
                    res.setdefault(key, []).append(secs)
                    counts.setdefault(key, set()).add(n)
        ask("sync46")  # the IPv6 chains exist from here on
        for _ in range(args.n * 5):
            for how in ("sync4", "sync46"):
                secs, _n = ask(how)
                res.setdefault(how, []).append(secs)
        pi.stdin.close()
        pi.wait(10)
        print(f"flush {args.flows} NATed LAN flows (deleted per run: "
              f"netlink {sorted(counts['netlink'])}, tool {sorted(counts['tool'])})")
        table([("failberry, ctnetlink in-process", res["netlink"], ""),
               ("conntrack -D --src-nat --reply-dst (before)", res["tool"], ""),
               ("failberry, nothing to delete", res["netlink (nothing left)"],
                f"returns {sorted(counts['netlink (nothing left)'])}"),
               ("conntrack -D, nothing to delete", res["tool (nothing left)"],
                f"exit status/count {sorted(counts['tool (nothing left)'])}")])
        r = statistics.median(res["sync46"]) / statistics.median(res["sync4"])
        print("\nperiodic firewall re-apply, nothing changed")
        table([("IPv4 only (IptcFirewall)", res["sync4"], ""),
               ("IPv4 + IPv6 (DualStackFirewall)", res["sync46"], f"x{r:.2f}")])
    finally:
        topo.down()


if __name__ == "__main__":
    main()
