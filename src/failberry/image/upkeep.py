"""What keeps an unattended Pi patched without spending the mobile data or the SD card:
unattended-upgrades for Debian security updates only, apt kept off the metered link and
rebooting only inside `[image] reboot_window` while the mobile link is not the active uplink
(failberry.upkeep decides both on the Pi), apt's own writes cut down, and failberry's modules
compiled at build time (no .pyc written, and no compiling under emulation, at boot)."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

from failberry.config import Config, FailoverMode
from failberry.image.customise import PACKAGE_DIR, UNIT_DIR, Tree, enable_unit
from failberry.image.render import SERVICE_UNIT

LOG = logging.getLogger(__name__)

APT_CONF = "/etc/apt/apt.conf.d"
REBOOT_UNIT = "failberry-reboot"
# The units unattended-upgrades runs through (Debian's apt package ships the first two).
APT_TIMERS = ("apt-daily.timer", "apt-daily-upgrade.timer")
APT_SERVICES = ("apt-daily.service", "apt-daily-upgrade.service")
UPKEEP = "/usr/bin/python3 -m failberry.upkeep"


def auto_upgrades(enabled: bool) -> str:
    """/etc/apt/apt.conf.d/20auto-upgrades: what apt's daily timers do."""
    on = "1" if enabled else "0"
    return ("// Written by failberry from [image] security_updates.\n"
            f'APT::Periodic::Update-Package-Lists "{on}";\n'
            f'APT::Periodic::Unattended-Upgrade "{on}";\n'
            f'APT::Periodic::AutocleanInterval "{"7" if enabled else "0"}";\n')


def unattended_upgrades() -> str:
    """Security updates only, no reboot of its own: failberry-reboot.timer reboots, because
    only failberry knows whether the mobile link is the one carrying the LAN."""
    return ("// Written by failberry: Debian security updates only. The reboot an upgrade asks\n"
            "// for is failberry's (failberry-reboot.timer, [image] reboot_window).\n"
            "#clear Unattended-Upgrade::Origins-Pattern;\n"
            "Unattended-Upgrade::Origins-Pattern {\n"
            '    "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";\n'
            "};\n"
            'Unattended-Upgrade::Automatic-Reboot "false";\n'
            'Unattended-Upgrade::Remove-Unused-Kernel-Packages "true";\n'
            'Unattended-Upgrade::Remove-Unused-Dependencies "true";\n'
            'Unattended-Upgrade::MinimalSteps "true";\n')


def apt_sd_card() -> str:
    """apt's writes to the card cut down: lists kept compressed, no on-disk binary caches
    (tens of MB rewritten on every update), no translations."""
    return ("// Written by failberry: spare the SD card.\n"
            'Acquire::GzipIndexes "true";\n'
            'Acquire::CompressionTypes::Order:: "gz";\n'
            'Acquire::Languages "none";\n'
            'Dir::Cache::pkgcache "";\n'
            'Dir::Cache::srcpkgcache "";\n')


def security_sources(suite: str) -> str:
    """The Debian security archive (mmdebstrap's sources.list holds only the mirror)."""
    return ("# Written by failberry: Debian security updates ([image] security_updates).\n"
            f"deb http://security.debian.org/debian-security {suite}-security "
            "main non-free-firmware\n")


def metered_dropin() -> str:
    """apt-daily*.service: skipped (not failed) while the mobile link is the active uplink."""
    return ("# Written by failberry: no package downloads over the mobile (metered) link\n"
            "# ([image] updates_over_mobile = false). Exit 1 skips the run.\n"
            "[Service]\n"
            f"ExecCondition={UPKEEP} may-fetch\n")


def late_shutdown_helper_dropin() -> str:
    """unattended-upgrades.service only guards upgrades at shutdown: it need not compete with
    failberryd for the CPU during boot."""
    return ("# Written by failberry: start after the supervisor (boot time).\n"
            f"[Unit]\nAfter={SERVICE_UNIT}\n")


def reboot_service(window: str) -> str:
    """The check the reboot timer runs: only when an upgrade asked for a reboot."""
    return f"""\
[Unit]
Description=failberry: reboot for a security update inside the reboot window ({window})
ConditionPathExists=/run/reboot-required
After={SERVICE_UNIT}

[Service]
Type=oneshot
ExecStart={UPKEEP} reboot-if-due --window {window}
"""


def reboot_timer() -> str:
    """Every ten minutes; the service decides (and does nothing without /run/reboot-required)."""
    return """\
[Unit]
Description=failberry: reboot for a security update when due

[Timer]
OnCalendar=*:0/10
AccuracySec=1min

[Install]
WantedBy=timers.target
"""


# ifupdown's networking.service orders itself before network.target, which failberryd waits
# for, and first waits for udev's coldplug (ifupdown-pre): 30-60 s of a boot under QEMU, for
# an /etc/network/interfaces with nothing in it. systemd-networkd configures the LAN and
# systemd brings up lo; ifupdown stays installed for an admin who wants it (unmask both).
# The rest are started at every boot and serve nothing on a headless router: kernel debug,
# tracing and configfs (USB gadgets) mounts, FUSE's control file system, huge pages, foreign
# binary formats, LVM scrub snapshots, EFI pstore. Each costs a process or a mount early in
# a boot that is CPU-bound on the Pi (and under emulation). The journal lives in RAM
# (journald.conf.d/90-failberry.conf, Storage=volatile), so systemd-journal-flush has nothing
# to move to /var; it only ordered systemd-tmpfiles-setup (and failberryd, which waits for
# that) after journald's whole start, 1.5-7 s of a boot under QEMU. An admin who makes the
# journal persistent unmasks it.
SLOW_UNUSED_UNITS = ("networking.service", "ifupdown-pre.service",
                     "systemd-journal-flush.service",
                     "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
                     "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
                     "dev-hugepages.mount", "systemd-binfmt.service",
                     "proc-sys-fs-binfmt_misc.automount", "e2scrub_reap.service",
                     "systemd-pstore.service")


# Generators PID 1 runs, and waits for, before it loads a single unit, for what a failberry
# image has none of: GPT partitions to mount by type (the card is MBR), hibernation, crypttab,
# integritytab, veritytab, offline system updates. A /dev/null link in /etc disables one
# (systemd.generator(7)); fstab, getty, SysV scripts, rc.local and the kernel command line's
# debug and run options keep theirs.
UNUSED_GENERATORS = ("systemd-gpt-auto-generator", "systemd-hibernate-resume-generator",
                     "systemd-cryptsetup-generator", "systemd-integritysetup-generator",
                     "systemd-veritysetup-generator", "systemd-system-update-generator")


def mask_slow_unused_units(tree: Tree) -> None:
    """Units and generators at every boot that configure nothing on a failberry image."""
    for unit in SLOW_UNUSED_UNITS:
        tree.symlink(f"{UNIT_DIR}/{unit}", "/dev/null")
    for generator in UNUSED_GENERATORS:
        tree.symlink(f"/etc/systemd/system-generators/{generator}", "/dev/null")


# systemd-sysusers runs at boot while /usr is newer than /etc/.updated (ConditionNeedsUpdate);
# Debian ships no systemd-update-done to write that file, so it ran at every boot, one second
# under QEMU on the way to the LAN's address (networkd is ordered after it) and to failberryd.
# The image's users were made with /usr by the build (the packages' postinst scripts), and
# a package that adds one later runs sysusers itself.
UPDATED_STAMPS = ("/etc/.updated", "/var/.updated")


def mark_updated(tree: Tree) -> None:
    """/etc/.updated and /var/.updated with /usr's time, as systemd-update-done leaves them.
    systemd compares the times first and reads the file only when they differ in their
    nanoseconds alone; they are equal here, and the build's clamping keeps them equal. So the
    text carries no time stamp, and two builds of the same inputs stay the same. Last in the
    build: a later change to /usr would be newer."""
    usr = tree.host("/usr").stat().st_mtime_ns
    text = ("# Written by failberry's build, as systemd-update-done would: /etc and /var were\n"
            "# made with /usr (same time as /usr), so the boot-time update units have nothing\n"
            "# to do.\n")
    for path in UPDATED_STAMPS:
        tree.write(path, text)
        os.utime(tree.host(path), ns=(usr, usr), follow_symlinks=False)


def configure_upkeep(tree: Tree, cfg: Config) -> None:
    """Security updates, the metered-link guard and the reboot timer, or all of it off."""
    image = cfg.image
    tree.write(f"{APT_CONF}/20auto-upgrades", auto_upgrades(image.security_updates))
    tree.write(f"{APT_CONF}/90failberry-sd-card", apt_sd_card())
    if not image.security_updates:
        for unit in (*APT_TIMERS, "unattended-upgrades.service"):
            tree.symlink(f"{UNIT_DIR}/{unit}", "/dev/null")
        LOG.info("security updates: off")
        return
    tree.write(f"{APT_CONF}/52failberry-unattended-upgrades", unattended_upgrades())
    tree.write("/etc/apt/sources.list.d/debian-security.list", security_sources(image.suite))
    if not image.updates_over_mobile:
        for unit in APT_SERVICES:
            tree.write(f"{UNIT_DIR}/{unit}.d/50-failberry-metered.conf", metered_dropin())
    tree.write(f"{UNIT_DIR}/unattended-upgrades.service.d/50-failberry.conf",
               late_shutdown_helper_dropin())
    if image.reboot_window:
        tree.write(f"{UNIT_DIR}/{REBOOT_UNIT}.service", reboot_service(image.reboot_window))
        tree.write(f"{UNIT_DIR}/{REBOOT_UNIT}.timer", reboot_timer())
        enable_unit(tree, f"{REBOOT_UNIT}.timer", UNIT_DIR, "timers.target")
    sidecar = cfg.failover.mode is FailoverMode.SIDECAR  # the Pi's only uplink: always over it
    LOG.info("security updates: daily, %s the mobile link, reboots %s",
             "also over" if image.updates_over_mobile or sidecar else "never over",
             f"in {image.reboot_window}" if image.reboot_window else "never")


# ---------------------------------------------------------------------------------------------
# failberry's modules compiled at build time

COMPILE = """\
import importlib.util, py_compile, sys
root, out = sys.argv[1], sys.argv[2]
for path in sys.argv[3:]:
    py_compile.compile(root + path, cfile=out + importlib.util.cache_from_source(path),
                       dfile=path, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
"""


def guest_python(tree: Tree) -> str:
    """The image's python3 version ("3.11"), from /usr/bin/python3's link; "" if unknown."""
    link = tree.host("/usr/bin/python3")
    if not link.is_symlink():
        return ""
    return os.readlink(link).rsplit("python", 1)[-1]


def compile_package(tree: Tree) -> int:
    """.pyc files beside failberry's sources, made by this machine's Python when it is the
    image's version. Hash-checked pycs (no time stamps) and a fixed hash seed (set and
    frozenset constants keep their order): two builds stay byte-identical."""
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    guest = guest_python(tree)
    if guest != host:
        LOG.info("not compiling failberry's modules: the image has Python %s, this machine %s",
                 guest or "(unknown)", host)
        return 0
    sources = sorted(e.path for e in tree.entries.values()
                     if e.kind == "file" and e.path.startswith(PACKAGE_DIR + "/")
                     and e.path.endswith(".py"))
    with tempfile.TemporaryDirectory(prefix="failberry-pyc-") as out:
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run([sys.executable, "-c", COMPILE, str(tree.root), out, *sources],
                       check=True, env=env)
        for path in sources:
            pyc = importlib.util.cache_from_source(path)
            tree.mkdir(str(PurePosixPath(pyc).parent))
            tree.write(pyc, Path(out + pyc).read_bytes())
    LOG.info("compiled %d modules of failberry for Python %s", len(sources), host)
    return len(sources)
