"""Flash throughput: `failberry flash` beside dd and bmaptool, onto a loop device (needs root).

A 256 MiB image with 64 MiB of data (the rest holes, like a fresh build) is written to a loop
device backed by a file in a temporary directory. Every tool's time includes making the data
durable (fsync); ours, bmaptool's and the dd pipeline's also include verifying it by
hashing the image and reading the device back.

    .venv/bin/python bench/flash.py [--size-mib 256] [--data-mib 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from failberry.image.flash import flash

MiB = 1024**2


def make_image(path: Path, size: int, data: int) -> None:
    chunk = hashlib.shake_256(b"failberry").digest(MiB)
    with path.open("wb") as f:
        f.truncate(size)
        # Data in 4 MiB runs spread over the image, holes between them.
        runs = data // (4 * MiB)
        stride = size // max(runs, 1)
        for i in range(runs):
            f.seek(i * stride)
            for _ in range(4):
                f.write(chunk)


def timed(fn: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.monotonic()
        fn()
        best = min(best, time.monotonic() - start)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--data-mib", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    if os.geteuid() != 0:
        print("bench/flash.py: needs root (loop devices)", file=sys.stderr)
        return 2
    size, data = a.size_mib * MiB, a.data_mib * MiB
    with tempfile.TemporaryDirectory(prefix="fb-bench-flash-") as tmp:
        image = Path(tmp) / "fb.img"
        make_image(image, size, data)
        subprocess.run(["bmaptool", "create", "-o", f"{image}.bmap", str(image)], check=True,
                       capture_output=True)
        plain = Path(tmp) / "plain.img"
        os.link(image, plain)  # same bytes, no .bmap beside it
        backing = Path(tmp) / "disk.raw"
        with backing.open("wb") as f:
            f.truncate(size)
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                             capture_output=True, text=True).stdout.strip()
        quiet: Callable[[int, int], None] = lambda done, total: None  # noqa: E731
        try:
            rows = [
                ("failberry flash, whole image + verify",
                 timed(lambda: flash(plain, Path(dev), yes=True, allow_large=False,
                                     progress=quiet), a.runs), size),
                ("dd bs=4M conv=fsync, whole image (no verify)",
                 timed(lambda: subprocess.run(["dd", f"if={plain}", f"of={dev}", "bs=4M",
                                               "conv=fsync", "status=none"], check=True),
                       a.runs), size),
                ("dd conv=fsync + dd iflag=direct | sha256sum",
                 timed(lambda: subprocess.run(
                     f"dd if={plain} of={dev} bs=4M conv=fsync status=none && "
                     f"sha256sum {plain} >/dev/null && dd if={dev} bs=4M iflag=direct "
                     f"count={size // (4 * MiB)} status=none | sha256sum >/dev/null",
                     shell=True, check=True), a.runs), size),
                ("failberry flash, bmap + verify",
                 timed(lambda: flash(image, Path(dev), yes=True, allow_large=False,
                                     progress=quiet), a.runs), data),
                ("bmaptool copy, bmap + verify",
                 timed(lambda: subprocess.run(["bmaptool", "-q", "copy", str(image), dev],
                                              check=True), a.runs), data),
            ]
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)
    print(f"image {a.size_mib} MiB, {a.data_mib} MiB mapped; loop device on a file; best of "
          f"{a.runs}")
    print(f"{'tool':<48} {'seconds':>8} {'MiB/s':>8} {'vs ref':>7}")
    refs = {0: 2, 3: 4}
    for i, (name, seconds, nbytes) in enumerate(rows):
        ratio = (f"{seconds / rows[refs[i]][1]:.2f}x" if i in refs
                 else "ref" if i in refs.values() else "-")
        print(f"{name:<48} {seconds:8.2f} {nbytes / MiB / seconds:8.0f} {ratio:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
