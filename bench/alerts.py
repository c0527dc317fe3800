"""Alerts cost: from a failover published on the bus to the SMS text arriving at a fake stick
on a pty (beside a bare `AT`/`OK` round trip on the same pty, the floor), and the outbox's
bookkeeping per alert in a storm (100,000 alerts of 50 kinds into one channel).

    .venv/bin/python bench/alerts.py"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from alerts_fakes.sms_modem import FakeSmsModem  # noqa: E402
from failberry import config  # noqa: E402
from failberry.alerts.at_session import SerialSmsProvider  # noqa: E402
from failberry.alerts.build import build  # noqa: E402
from failberry.alerts.model import Alert, Event, Severity  # noqa: E402
from failberry.alerts.outbox import Outbox, Policy  # noqa: E402
from failberry.bus import ActiveUplinkChanged, Bus  # noqa: E402
from failberry.modem.at import open_serial  # noqa: E402
from failberry.parts import Seams  # noqa: E402
from failberry.status import Status  # noqa: E402

ROUNDS = 20
STORM = 100_000


async def sms_latency(d: Path) -> tuple[float, float]:
    fake = FakeSmsModem(d)
    cfg = config.parse(f'[modem]\napn = "x"\n[paths]\nstate_dir = "{d}/state"\n[alerts]\n'
                       f'sms_to = ["+491701234567"]\nhold_down = "0s"\nmax_per_hour = 3600\n'
                       f'hooks_dir = "{d}/none"\n')
    bus = Bus()
    provider = SerialSmsProvider(str(fake.path), open_serial)
    part = build(cfg, Seams(Status(), bus), provider=provider, tick=0.5)
    task = asyncio.create_task(part.run())
    bus.publish(ActiveUplinkChanged("wired", None, "start"))
    session = await provider.acquire()
    assert session is not None
    at_times, sms_times = [], []
    for i in range(ROUNDS):
        t = time.perf_counter()
        await session.command("AT")
        at_times.append(time.perf_counter() - t)
        n = len(fake.sent)
        t = time.perf_counter()
        bus.publish(ActiveUplinkChanged("mobile" if i % 2 else "wired",
                                        "wired" if i % 2 else "mobile", f"bench {i}"))
        while len(fake.sent) == n:
            await asyncio.sleep(0.0005)
        sms_times.append(time.perf_counter() - t)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    provider.close()
    fake.close()
    return statistics.median(sms_times), statistics.median(at_times)


def storm() -> float:
    box = Outbox(Policy(hold_down=300, max_per_hour=20))
    t0 = 1_700_000_000.0
    start = time.perf_counter()
    for i in range(STORM):
        now = t0 + i * 0.01
        box.offer(Alert(Event.TEST, Severity.WARNING, f"m{i}", now, key=f"k{i % 50}"), now)
        e = box.take(now)
        if e is not None:
            box.sent(e, now)
    return (time.perf_counter() - start) / STORM


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        sms, at = asyncio.run(sms_latency(Path(d)))
    per = storm()
    rows = [("failover published -> SMS text at the stick", sms * 1e3, "ms"),
            ("reference: AT -> OK round trip, same pty", at * 1e3, "ms"),
            ("outbox offer+take per alert, 100k-alert storm", per * 1e6, "us")]
    print(f"{'measure':<50} {'value':>10}")
    for name, value, unit in rows:
        print(f"{name:<50} {value:>7.2f} {unit}")
    print(f"{'ratio SMS / AT round trip':<50} {sms / at:>10.1f}")


if __name__ == "__main__":
    main()
