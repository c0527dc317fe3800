"""Fetching the .deb files a base image lacks, for the image's architecture, at build time.

apt resolves against the image's own dpkg status file, so only what is missing (the packages
and the dependencies the image does not have) is downloaded; the first-boot unit installs them
offline with `dpkg -i`. apt runs with a private configuration: nothing of the host's apt state
is read or changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from failberry.image.runner import run

LOG = logging.getLogger(__name__)

# What the supervisor needs on top of Raspberry Pi OS Lite (its runtime libraries, PPP, the
# modem mode switch, legacy iptables for python-iptables, udhcpc for NCM/ECM/HiLink sticks)
# and what the first boot uses.
BASE_IMAGE_PACKAGES = (
    "python3-pyroute2", "python3-iptables", "python3-serial", "python3-usb", "python3-pyudev",
    "python3-dnspython", "python3-requests", "ppp", "usb-modeswitch", "usb-modeswitch-data",
    "iptables", "fdisk", "avahi-daemon", "sudo", "udhcpc",
)
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class DebFetcher(Protocol):
    """Downloads packages missing from an image into a directory; returns the .deb files."""

    def __call__(self, *, arch: str, suite: str, mirror: str, dpkg_status: bytes,
                 packages: Sequence[str], work_dir: Path) -> list[Path]: ...


def _apt_conf(work: Path, arch: str) -> str:
    dirs = {
        "Dir::State": work / "state",
        "Dir::State::status": work / "status",
        "Dir::Cache": work / "cache",
        "Dir::Etc::SourceList": work / "sources.list",
        "Dir::Etc::SourceParts": work / "sources.list.d",
        "Dir::Etc::Parts": work / "apt.conf.d",
        "Dir::Etc::Preferences": work / "preferences",
        "Dir::Etc::PreferencesParts": work / "preferences.d",
        "Dir::Log": work / "log",
    }
    lines = [f'{key} "{value}";' for key, value in dirs.items()]
    lines += [f'APT::Architecture "{arch}";', f'APT::Architectures {{ "{arch}"; }};',
              'APT::Install-Recommends "false";', 'Acquire::Languages "none";',
              # Our private directories belong to root; apt's _apt sandbox could not write them.
              'APT::Sandbox::User "root";', 'Debug::NoLocking "true";']
    return "\n".join(lines) + "\n"


def apt_fetch(*, arch: str, suite: str, mirror: str, dpkg_status: bytes,
              packages: Sequence[str], work_dir: Path) -> list[Path]:
    """Download what an image with this dpkg status lacks to install `packages`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "apt.conf.d",
                "preferences.d", "log"):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
    (work_dir / "status").write_bytes(dpkg_status)
    signed = f" signed-by={KEYRING}" if KEYRING.exists() else ""
    (work_dir / "sources.list").write_text(
        f"deb [arch={arch}{signed}] {mirror} {suite} main\n"
        f"deb [arch={arch}{signed}] {mirror} {suite}-updates main\n")
    conf = work_dir / "apt.conf"
    conf.write_text(_apt_conf(work_dir, arch))
    env = {"APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}
    archives = work_dir / "cache/archives"
    for stale in archives.glob("*.deb"):
        stale.unlink()  # only this build's set ends up in the image
    LOG.info("fetching %d packages for %s from %s (%s)", len(packages), arch, mirror, suite)
    run(["apt-get", "-q", "update"], env=env, timeout=900)
    run(["apt-get", "-q", "-y", "--download-only", "--no-install-recommends", "install",
         *packages], env=env, timeout=1800)
    debs = sorted(archives.glob("*.deb"))
    LOG.info("fetched %d .deb files (%d KiB) the image lacks", len(debs),
             sum(d.stat().st_size for d in debs) // 1024)
    return debs
