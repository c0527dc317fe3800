"""Image build benchmark: cold build (empty cache), warm rebuild after a config-only change,
raw and xz sizes, and boot-to-/health time under QEMU, beside the issue's targets (2 cores).

    sudo .venv/bin/python bench/build_image.py [--board rpi3|rpi2] [--keep-cache DIR] [--skip-cold]

--skip-cold measures the warm numbers only, with the cache in --keep-cache. --board rpi2 builds
the armhf image (boot-tested under qemu-system-arm's virt)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024 ** 3
MB = 1000 ** 2
TARGETS = {"cold build": (600.0, "s"), "warm rebuild": (30.0, "s"), "raw image": (1.0, "GiB"),
           "xz image": (300.0, "MB"), "boot to /health": (40.0, "s")}


def cli(*args: str, timeout: float = 1800) -> tuple[float, str]:
    """Run `failberry ARGS`; (seconds, stdout). Exits on failure with its stderr."""
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "failberry", *args], capture_output=True,
                         text=True, timeout=timeout)
    secs = time.monotonic() - started
    if res.returncode != 0:
        sys.exit(f"failberry {' '.join(args)} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    return secs, res.stdout


def config(where: Path, hostname: str, pub: str, board: str) -> Path:
    """A test config; only the hostname differs between the runs. Resolvers and probe
    targets stay on the guest's LAN (boot-test isolates it)."""
    path = where / f"{hostname}.toml"
    path.write_text(f'[image]\nboard = "{board}"\nhostname = "{hostname}"\n[admin]\n'
                    f'ssh_authorized_keys = ["{pub}"]\n[modem]\napn = "internet"\n'
                    '[lan]\ndns = ["192.168.1.1"]\n'
                    '[uplink.wired]\nprobe_targets = ["icmp:192.168.1.1"]\n'
                    '[uplink.mobile]\nprobe_targets = ["icmp:192.168.1.1"]\n')
    return path


def step_seconds(stdout: str, step: str) -> float:
    """A step's duration from the build summary."""
    m = re.search(rf"^\s+{step}\s+([\d.]+)s$", stdout, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def main() -> int:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep-cache", type=Path, default=Path("/var/cache/failberry-bench"))
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--board", choices=["rpi3", "rpi2"], default="rpi3")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the build needs it)")
    rows: dict[str, float] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="failberry-bench-") as tmp:
        work = Path(tmp)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / "key"],
                       check=True)
        pub = (work / "key.pub").read_text().strip()
        cache = args.keep_cache
        if not args.skip_cold:
            shutil.rmtree(cache, ignore_errors=True)
            secs, out = cli("build", "-c", str(config(work, "benchcold", pub, args.board)), "-o",
                            str(work / "cold.img"), "--cache-dir", str(cache))
            rows["cold build"] = secs
            notes["cold build"] = f"bootstrap {step_seconds(out, 'bootstrap_base'):.0f}s"
        secs, out = cli("build", "-c", str(config(work, "benchwarm", pub, args.board)), "-o",
                        str(work / "warm.img"), "--cache-dir", str(cache))
        rows["warm rebuild"] = secs
        notes["warm rebuild"] = (f"unpack {step_seconds(out, 'unpack_base'):.0f}s, assemble "
                                 f"{step_seconds(out, 'assemble_image'):.0f}s")
        # The same config again, compressed: the xz and bmap artefacts.
        secs, out = cli("build", "-c", str(config(work, "benchwarm", pub, args.board)), "-o",
                        str(work / "warm.img"), "--cache-dir", str(cache), "--compress")
        img = work / "warm.img"
        rows["raw image"] = img.stat().st_size / GiB
        notes["raw image"] = f"{img.stat().st_blocks * 512 / GiB:.2f} GiB allocated"
        rows["xz image"] = (work / "warm.img.xz").stat().st_size / MB
        notes["xz image"] = f"xz -T0 took {step_seconds(out, 'compress_image'):.0f}s"
        _, out = cli("boot-test", str(img), "--ssh-key", str(work / "key"), timeout=900)
        m = re.search(r"^\s+([\d.]+)s\s+/health answered", out, re.MULTILINE)
        rows["boot to /health"] = float(m.group(1)) if m else float("nan")
        m = re.search(r"^\s+([\d.]+)s\s+ssh login", out, re.MULTILINE)
        notes["boot to /health"] = f"ssh login at {m.group(1)}s" if m else ""
    print(f"\nfailberry image build ({args.board}) on {os.cpu_count()} cores")
    print(f"{'metric':<18} {'measured':>12} {'target':>10}  {'':4} notes")
    for name, (target, unit) in TARGETS.items():
        if name not in rows:
            continue
        value = rows[name]
        ok = "ok" if value <= target else "OVER"
        print(f"{name:<18} {value:>8.2f} {unit:<3} {target:>6g} {unit:<3}  {ok:4} "
              f"{notes.get(name, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
