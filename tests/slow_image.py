"""The slow tier's shared pieces: one build cache kept between runs on a machine, the test
config (an isolated guest), and one rpi3 image built once per session (`built`) that every
slow test reading or booting an image shares."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# The slow tier shares one cache, kept between runs on the same machine so reruns are warm.
CACHE = Path(os.environ.get("FAILBERRY_TEST_CACHE", "/var/cache/failberry-test"))
HAVE_BUILD_TOOLS = all(shutil.which(t) for t in ("mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy",
                                                  "sfdisk", "debugfs", "qemu-system-aarch64"))


def keypair(where: Path) -> Path:
    key = where / "admin_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@failberry",
                    "-f", key], check=True)
    return key


# boot-test isolates the guest (QEMU's restrict=on): its resolvers and probe targets are
# QEMU's own address on the guest's LAN, so nothing it sends is meant for the outside.
ISOLATED = ('[lan]\ndns = ["192.168.1.1"]\n\n'
            '[uplink.wired]\nprobe_targets = ["icmp:192.168.1.1"]\n\n'
            '[uplink.mobile]\nprobe_targets = ["icmp:192.168.1.1"]\n')


def write_config(where: Path, key: Path, hostname: str = "fbtest", board: str = "rpi3") -> Path:
    pub = key.with_name(key.name + ".pub").read_text().strip()
    path = where / f"{hostname}.toml"
    path.write_text(f'[image]\nboard = "{board}"\nhostname = "{hostname}"\n\n'
                    f'[admin]\nssh_authorized_keys = ["{pub}"]\n\n[modem]\napn = "internet"\n\n'
                    + ISOLATED)
    return path


def build_image(cfg: Path, out: Path, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    from conftest import run_cli  # conftest imports this module's fixtures: no cycle at load

    res = run_cli(["build", "-c", str(cfg), "-o", str(out), "--cache-dir", str(CACHE)],
                  timeout=timeout)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


@pytest.fixture(scope="session")
def slow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image")


@pytest.fixture(scope="session")
def admin_key(slow_dir: Path) -> Path:
    return keypair(slow_dir)


@pytest.fixture(scope="session")
def built(slow_dir: Path, admin_key: Path) -> tuple[Path, str]:
    """One rpi3 image from the test config (cold the first time on a machine, then warm)."""
    if os.geteuid() != 0 or not HAVE_BUILD_TOOLS:
        pytest.skip("needs root and the build tools (scripts/apt/build.txt)")
    cfg = write_config(slow_dir, admin_key)
    out = slow_dir / "first" / "fbtest.img"
    res = build_image(cfg, out)
    return out, res.stdout
