"""SD-card wear and boot time of built images (issue 18): boot each under QEMU `virt` with
`failberry boot-test`, let the guest sit idle for a window (10 minutes by default), and print
what it wrote to its disk extrapolated to a day, beside boot to /health and failberryd's start
to /health. Give an image built before a change and one after to compare them. Root.

    .venv/bin/python bench/idle_writes.py --ssh-key KEY IMAGE [IMAGE ...] [--window 600]

The window starts after the boot test's checks (status, SSH logins), so ext4's 60 s commit
of their writes may fall into its first minute; the longer the window, the less that weighs.
Goal: at most 20 MiB per idle day."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

GOAL = 20 * 1024 * 1024
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}


def size(text: str) -> float:
    """Bytes from failberry's human sizes ("1.5 MiB")."""
    number, unit = text.split()
    return float(number) * UNITS[unit]


def measure(image: Path, key: Path, window: float) -> dict[str, str]:
    """One boot: the report's figures as text."""
    res = subprocess.run([sys.executable, "-m", "failberry", "boot-test", str(image),
                          "--ssh-key", str(key), "--timeout", "600",
                          "--idle-window", f"{window:g}"],
                         capture_output=True, text=True, timeout=window + 1200)
    out = res.stdout
    found = {"image": image.name, "boot-test": "ok" if res.returncode == 0 else "FAILED"}
    if m := re.search(r"^\s+([\d.]+)s\s+/health answered", out, re.MULTILINE):
        found["boot to /health"] = f"{m.group(1)} s"
    if m := re.search(r"failberryd start -> /health: ([\d.]+)s", out):
        found["failberryd start to /health"] = f"{m.group(1)} s"
    if m := re.search(r"idle writes: (.+?) in ([\d.]+)s, (.+?)/day", out):
        per_day = size(m.group(3))
        found["written"] = f"{m.group(1)} in {m.group(2)} s"
        found["per idle day"] = f"{per_day / 1024 ** 2:.1f} MiB"
        found["goal 20 MiB/day"] = "met" if per_day <= GOAL else "missed"
    if res.returncode != 0:
        print(out[-3000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--ssh-key", type=Path, required=True)
    p.add_argument("--window", type=float, default=600.0, help="idle seconds (default 600)")
    args = p.parse_args()
    rows = [measure(image, args.ssh_key, args.window) for image in args.images]
    columns = ["image", "boot-test", "boot to /health", "failberryd start to /health",
               "written", "per idle day", "goal 20 MiB/day"]
    widths = [max(len(c), *(len(r.get(c, "-")) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(row.get(c, "-").ljust(w) for c, w in zip(columns, widths, strict=True)))


if __name__ == "__main__":
    main()
