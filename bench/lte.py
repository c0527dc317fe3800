"""4G stick data-path benchmarks (tests/modem_fakes), printed as a table:

1. `ncm`: "device added" to the lease on the stick's interface (AT setup, SIM, registration,
   `AT^NDISDUP`, udhcpc against dnsmasq behind a veth) vs udhcpc alone getting a lease on
   the same veth (the floor).
2. `ncm`: a silent bearer drop, from the probes' "down" verdict to connected again (the
   redial rung: bearer down/up and a new lease).
3. `hilink`: "device added" to connected (DHCP, token handshake, SIM, registration, data
   switch) vs DHCP alone.

Needs root (network namespaces).

    sudo .venv/bin/python bench/lte.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from failberry.bus import UplinkHealth  # noqa: E402
from failberry.modem.machine import Phase  # noqa: E402
from modem_fakes.hilink_rig import HilinkRig  # noqa: E402
from modem_fakes.rig import Rig  # noqa: E402


def udhcpc_alone(ns: str, dev: str) -> float:
    """udhcpc in the foreground until it has a lease (-q quits then), timed."""
    start = time.monotonic()
    subprocess.run(["ip", "netns", "exec", ns, "udhcpc", "-f", "-q", "-n", "-i", dev,
                    "-s", "/bin/true", "-t", "4", "-T", "1"], check=True,
                   capture_output=True)
    return time.monotonic() - start


async def ncm_once(tmp: Path) -> tuple[float, float, float]:
    async with Rig(tmp, bearer="huawei") as rig:
        start = time.monotonic()
        await rig.wait_phase(Phase.CONNECTED, 30)
        up = time.monotonic() - start
        await rig.wait_for(rig.ping)
        floor_ns = rig.ns
        rig.ctl(op="wedge")
        start = time.monotonic()
        rig.bus.publish(UplinkHealth("mobile", False, "bench: probes lost"))
        await rig.wait_for(lambda: rig.phase is not Phase.CONNECTED, 10)
        await rig.wait_phase(Phase.CONNECTED, 30)
        recovered = time.monotonic() - start
        # the floor: the bearer is up again; a second client on the same veth
        floor = await asyncio.to_thread(udhcpc_alone, floor_ns, "wwan0")
        return up, recovered, floor


async def hilink_once(tmp: Path) -> tuple[float, float]:
    async with HilinkRig(tmp) as rig:
        start = time.monotonic()
        await rig.wait_for(lambda: rig.phase is Phase.CONNECTED, 30)
        up = time.monotonic() - start
        floor = await asyncio.to_thread(udhcpc_alone, rig.ns, "eth1")
        return up, floor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    ncm, hl = [], []
    for i in range(runs):
        with tempfile.TemporaryDirectory() as d:
            ncm.append(asyncio.run(ncm_once(Path(d))))
        with tempfile.TemporaryDirectory() as d:
            hl.append(asyncio.run(hilink_once(Path(d))))
        print(f"run {i + 1}: ncm {ncm[-1]}, hilink {hl[-1]}", file=sys.stderr)

    def med(rows: list[tuple[float, ...]], k: int) -> str:
        return f"{statistics.median(r[k] for r in rows):.2f} s"

    print(f"medians of {runs} runs")
    print("| measure | failberry | reference | |")
    print("|---|---|---|---|")
    print(f"| ncm: device added -> lease on wwan0 | {med(ncm, 0)} | {med(ncm, 2)} | "
          "udhcpc alone on the same veth |")
    print(f"| ncm: probes down -> connected again (redial) | {med(ncm, 1)} | | |")
    print(f"| hilink: device added -> connected | {med(hl, 0)} | {med(hl, 1)} | "
          "udhcpc alone on the same veth |")


if __name__ == "__main__":
    main()
