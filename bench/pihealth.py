"""Pi health part cost: one poll of a fake Pi (hwmon, four thermal zones, mounts) and of this
machine, and replaying a 100,000-record kernel log, beside `dmesg --raw` reading the same
file's worth of text from this machine's /dev/kmsg as the reference for "reading the log".

    .venv/bin/python bench/pihealth.py"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from failberry.bus import Bus  # noqa: E402
from failberry.pihealth.part import PiHealthPart  # noqa: E402
from failberry.status import Status  # noqa: E402
from pihealth_fakes import FakeClock, PiTree  # noqa: E402

RECORDS = 100_000


def best(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Median seconds per call over `repeat` runs of `number` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return statistics.median(times)


def main() -> None:
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as d:
        pi = PiTree(Path(d))
        pi.hwmon(alarm=0)
        for n in range(4):
            pi.zone(n, 45_000 + n * 1000, kind=f"zone{n}")
        pi.root()
        part = PiHealthPart(Status(), Bus(), sys_root=pi.sys, kmsg=pi.kmsg, mounts=pi.mounts,
                            clock=FakeClock())
        part.open()
        rows.append(("poll, fake Pi", best(part.poll, number=200) * 1e3, "ms"))
        real = PiHealthPart(Status(), Bus())
        real.open()
        rows.append(("poll, this machine", best(real.poll, number=200) * 1e3, "ms"))
        real.close()
        with pi.kmsg.open("w") as f:
            for i in range(RECORDS):
                text = ("hwmon hwmon1: Undervoltage detected!" if i % 1000 == 0 else
                        "hwmon hwmon1: Voltage normalised" if i % 1000 == 1 else
                        f"usb 1-1.{i % 4}: some ordinary kernel line number {i}")
                f.write(f"6,{i},{i * 1000},-;{text}\n")

        def replay() -> None:
            p = PiHealthPart(Status(), Bus(), sys_root=pi.sys, kmsg=pi.kmsg, mounts=pi.mounts,
                             clock=FakeClock(1e6))
            p.open()
            assert p.power.events_total == RECORDS // 1000

        secs = best(replay, repeat=3)
        rows.append((f"replay {RECORDS:,} records", secs * 1e3, "ms"))
        rows.append(("  per record", secs / RECORDS * 1e6, "us"))
    t = time.perf_counter()
    out = subprocess.run(["dmesg", "--raw"], capture_output=True, text=True, check=False)
    dsecs = time.perf_counter() - t
    n = max(1, len(out.stdout.splitlines()))
    rows.append((f"reference: dmesg --raw, {n:,} records", dsecs * 1e3, "ms"))
    rows.append(("  per record", dsecs / n * 1e6, "us"))
    print(f"{'what':<40} {'value':>10}")
    for what, value, unit in rows:
        print(f"{what:<40} {value:>8.3f} {unit}")


if __name__ == "__main__":
    main()
