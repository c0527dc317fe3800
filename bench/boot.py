"""Boot-time benchmark: one image booted N times under QEMU (`failberry boot-test`), each
milestone's median, min and max beside the target (issue 18: boot to /health <= 40 s under
`-M virt`). First boots every time: QEMU's snapshot mode never writes the image.

    sudo .venv/bin/python bench/boot.py [--boots 5] [--board rpi3|rpi2] [--image IMG]
                                        [--cache-dir DIR]

Without --image it builds the test config's image (bench/build_image.py's) from the cache.
"/health answered" is the first HTTP answer, "supervisor starting" (503) included; "start ->
READY" is how long after its start failberryd sent READY=1 (every part built; /health then
reports the uplinks' real state), from systemd's own time stamps in the guest. Boots run one
after another: a second QEMU beside one slows both (and this machine has 2 cores)."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from build_image import cli, config

TARGET = ("/health answered", 40.0)
MILESTONES = ("systemd", "failberryd starting", "/health answered", "ssh login")
SPANS = {"start -> /health": r"failberryd start -> /health: ([\d.]+)s",
         "start -> READY": r"failberryd start -> READY \(parts running\): ([\d.]+)s"}


def milestones(out: str) -> dict[str, float]:
    """The boot timeline boot-test printed: name -> seconds."""
    found = {m.group(2): float(m.group(1))
             for m in re.finditer(r"^\s+([\d.]+)s\s+(\S.*)$", out, re.MULTILINE)}
    for name, pattern in SPANS.items():
        m = re.search(pattern, out)
        if m:
            found[name] = float(m.group(1))
    return found


def load() -> str:
    """The host's load averages, to read the figures by."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    """Build (or take) the image, boot it N times, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boots", type=int, default=5)
    p.add_argument("--board", choices=["rpi3", "rpi2"], default="rpi3")
    p.add_argument("--image", type=Path, help="an image built from a test config")
    p.add_argument("--ssh-key", type=Path, help="the key --image lets in")
    p.add_argument("--cache-dir", type=Path, default=Path("/var/cache/failberry-bench"))
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the build needs it)")
    if args.image and not args.ssh_key:
        sys.exit("--image needs --ssh-key")
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="failberry-bench-") as tmp:
        work = Path(tmp)
        image, key = args.image, args.ssh_key
        if image is None:
            key = work / "key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key],
                           check=True)
            image = work / "boot.img"
            cli("build", "-c", str(config(work, "benchboot", key.with_suffix(".pub")
                                          .read_text().strip(), args.board)),
                "-o", str(image), "--cache-dir", str(args.cache_dir))
        for n in range(1, args.boots + 1):
            before = load()
            started = time.monotonic()
            _, out = cli("boot-test", str(image), "--ssh-key", str(key), "--idle-window", "0",
                         timeout=1800)
            runs.append(milestones(out))
            shown = ", ".join(f"{k} {v:.1f}s" for k, v in runs[-1].items()
                              if k in (*MILESTONES, *SPANS))
            print(f"boot {n}/{args.boots} ({time.monotonic() - started:.0f}s, load before "
                  f"{before}): {shown}", flush=True)
    print(f"\nfailberry boot-test ({args.board}, {args.boots} first boots) on "
          f"{os.cpu_count()} cores")
    print(f"{'milestone':<22} {'median':>8} {'min':>8} {'max':>8}")
    series = {name: [r[name] for r in runs if name in r] for name in (*MILESTONES, *SPANS)}
    for name, values in series.items():
        if values:
            print(f"{name:<22} {statistics.median(values):>7.1f}s {min(values):>7.1f}s "
                  f"{max(values):>7.1f}s")
    name, target = TARGET
    values = series[name]
    if len(values) < len(runs):
        print(f"{len(runs) - len(values)} boot(s) never answered /health")
        return 1
    median = statistics.median(values)
    print(f"\n{name}: median {median:.1f}s, target {target:g}s: "
          f"{'ok' if median <= target else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
