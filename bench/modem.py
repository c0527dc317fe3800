"""Modem benchmarks against the fake ZTE modem (tests/modem_fakes), printed as a table:

1. AT round trip over a pty: failberry's AtChannel vs a bare blocking pyserial exchange.
2. "device added" to ppp0 up with an address: the whole supervisor path (probe, identity,
   SIM, registration, dial, stand-in pppd in a network namespace) vs the stand-in pppd's
   own chat + TUN setup alone (the floor). Needs root.
3. Supervisor CPU while the modem sends 1,000 URCs/s for 10 s, vs a loop that only drains
   the same bytes from the port.
4. Cold start to connected: a stick that is still searching and registers 0.3 s after it
   appears, announcing it with a URC in the `+CREG: <n>,<stat>,...` shape, with the
   production poll interval (10 s), vs a stick registered from the start plus those 0.3 s.
   Then the same from `failberry run` being started (a process, /status polled) vs the same
   process's first /health answer. Needs root.

    sudo .venv/bin/python bench/modem.py [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from failberry.modem.at import AtChannel, open_serial  # noqa: E402
from failberry.modem.machine import Phase  # noqa: E402
from failberry.modem.ppp import write_ppp_files  # noqa: E402
from modem_fakes.rig import FAKES, Rig  # noqa: E402


async def at_roundtrip(n: int) -> tuple[float, float]:
    """Mean microseconds per `AT` -> `OK`: ours, and bare pyserial."""
    with tempfile.TemporaryDirectory() as tmp:
        dev = Path(tmp)
        proc = subprocess.Popen([sys.executable, str(FAKES / "fake_modem.py"), tmp, "{}"])
        try:
            while not (dev / "ttyUSB1").exists():
                await asyncio.sleep(0.01)
            port = open_serial(str(dev / "ttyUSB1"))
            ch = AtChannel(port, "bench", lambda _l: None)
            ch.start()
            await ch.command("ATE0")
            t0 = time.perf_counter()
            for _ in range(n):
                await ch.command("AT")
            ours = (time.perf_counter() - t0) / n * 1e6
            ch.close()
            import serial

            ref = serial.Serial(str(dev / "ttyUSB1"), 115200, timeout=2)
            t0 = time.perf_counter()
            for _ in range(n):
                ref.write(b"AT\r")
                while ref.readline().strip() != b"OK":
                    pass
            theirs = (time.perf_counter() - t0) / n * 1e6
            ref.close()
        finally:
            proc.terminate()
            proc.wait()
    return ours, theirs


async def added_to_up(runs: int) -> tuple[float, float]:
    """Median seconds from DeviceAdded to ppp0 up: ours, and the stand-in pppd alone."""
    ours, floor = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            rig = Rig(Path(tmp))
            async with rig:
                t0 = time.monotonic()
                # the PathWatcher posts DeviceAdded on its first, immediate poll
                await rig.wait_for(lambda r=rig: r.phase is Phase.CONNECTED,  # type: ignore[misc]
                                   step=0.001)
                ours.append(time.monotonic() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            # the floor: the stand-in pppd dialing by itself on a fresh fake modem
            rig = Rig(Path(tmp), start_part=False)
            async with rig:
                files = write_ppp_files(rig.cfg, str(rig.dev / "ttyUSB2"), Path(tmp) / "ppp",
                                        "ppp0")
                t1 = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", rig.ns, sys.executable, str(FAKES / "fake_pppd.py"),
                    "--control", tmp, "file", str(files.peer), "nodetach",
                    stdout=asyncio.subprocess.PIPE)
                assert proc.stdout is not None
                async for line in proc.stdout:
                    if b"local  IP address" in line:
                        break
                floor.append(time.monotonic() - t1)
                proc.terminate()
                await proc.wait()
    return statistics.median(ours), statistics.median(floor)


REGISTERS_AFTER = 0.3


async def cold_start(runs: int) -> tuple[float, float]:
    """Median seconds from DeviceAdded to connected: cold stick (URC with <n>), and a warm
    stick plus the time the cold one takes to register."""
    cold: list[float] = []
    warm: list[float] = []
    for scenario, out in (({"reg": 2, "urc_n": True, "register_after": REGISTERS_AFTER}, cold),
                          ({}, warm)):
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                async with Rig(Path(tmp), scenario, poll_interval=10.0) as rig:
                    t0 = time.monotonic()
                    await rig.wait_for(lambda r=rig: r.phase is Phase.CONNECTED,  # type: ignore[misc]
                                       step=0.001)
                    out.append(time.monotonic() - t0)
    return statistics.median(cold), statistics.median(warm) + REGISTERS_AFTER


def run_cold_start(runs: int) -> tuple[float, float]:
    """Median seconds from starting `failberry run` to the modem connected (cold stick), and
    to the same process's first /health answer."""
    from conftest import free_port
    from test_modem_run import get, modem, stick, supervisor, write_config

    ours, floor = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp, \
                stick(Path(tmp), {"reg": 2, "urc_n": True,
                                  "register_after": REGISTERS_AFTER}) as st:
            port = free_port()
            cfg = write_config(st, "", ["true"])
            t0 = time.monotonic()
            first = None
            with supervisor(cfg, port):
                while modem(port).get("state") != "connected":
                    if first is None:
                        with contextlib.suppress(OSError):
                            get(port, "/health")
                            first = time.monotonic() - t0
                    if time.monotonic() - t0 > 30:
                        raise RuntimeError("failberry run did not connect in 30 s")
                    time.sleep(0.005)
                ours.append(time.monotonic() - t0)
                floor.append(first if first is not None else ours[-1])
    return statistics.median(ours), statistics.median(floor)


async def storm_cpu(seconds: float) -> tuple[float, float, int]:
    """CPU % of this process during a 1,000 URC/s storm: ours (connected supervisor), and a
    loop that only drains the port; plus the URCs our layer delivered."""
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        async with rig:
            await rig.wait_for(lambda: rig.phase is Phase.CONNECTED)
            ch = rig.driver.channel
            assert ch is not None
            u0 = ch.urcs
            c0, t0 = time.process_time(), time.monotonic()
            rig.ctl(op="storm", rate=1000, seconds=seconds)
            await asyncio.sleep(seconds)
            ours = (time.process_time() - c0) / (time.monotonic() - t0) * 100
            delivered = ch.urcs - u0
            rig.driver.channel = None  # the reference reads the same port instead
            ch.close()
            fd = os.open(str(rig.dev / "ttyUSB1"), os.O_RDONLY | os.O_NONBLOCK)
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, lambda: os.read(fd, 4096))
            c0, t0 = time.process_time(), time.monotonic()
            rig.ctl(op="storm", rate=1000, seconds=seconds)
            await asyncio.sleep(seconds)
            ref = (time.process_time() - c0) / (time.monotonic() - t0) * 100
            loop.remove_reader(fd)
            os.close(fd)
    return ours, ref, delivered


async def main(quick: bool) -> None:
    rows = []
    ours, ref = await at_roundtrip(300 if quick else 2000)
    rows.append(("AT round trip over pty (us)", f"{ours:.0f}", f"{ref:.0f}",
                 "bare pyserial", f"{ours / ref:.2f}"))
    if os.geteuid() == 0:
        ours, ref = await added_to_up(1 if quick else 5)
        rows.append(("device added -> ppp0 up (s)", f"{ours:.3f}", f"{ref:.3f}",
                     "stand-in pppd alone", f"{ours / ref:.2f}"))
        ours, ref = await cold_start(1 if quick else 5)
        rows.append(("cold start -> connected, driver (s)", f"{ours:.3f}", f"{ref:.3f}",
                     "warm stick + 0.3 s", f"{ours / ref:.2f}"))
        ours, ref = run_cold_start(1 if quick else 3)
        rows.append(("failberry run -> connected, cold (s)", f"{ours:.3f}", f"{ref:.3f}",
                     "its first /health", f"{ours / ref:.2f}"))
        ours, ref, n = await storm_cpu(3 if quick else 10)
        rows.append((f"CPU during 1000 URC/s ({n} URCs) %", f"{ours:.1f}", f"{ref:.1f}",
                     "drain-only reader", f"{ours / max(ref, 0.1):.1f}"))
    else:
        rows.append(("device added -> ppp0 up", "skipped", "-", "needs root", "-"))
    print(f"{'measure':40} {'ours':>10} {'reference':>10}  {'reference is':22} {'ratio':>6}")
    for name, a, b, what, r in rows:
        print(f"{name:40} {a:>10} {b:>10}  {what:22} {r:>6}")


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv))
