"""The text of every file failberry renders from the config onto an image. Pure functions."""

from __future__ import annotations

import ipaddress

from failberry.config import Config

CONFIG_PATH = "/etc/failberry/failberry.toml"
FIRSTBOOT_MARKER = "/var/lib/failberry/firstboot-done"
DEB_DIR = "/var/cache/failberry/debs"
FIRSTBOOT_UNIT = "failberry-firstboot.service"
SERVICE_UNIT = "failberryd.service"

# The supervisor pings at half this period and only while every part is current.
WATCHDOG_SEC = 30


def failberryd_service(*, after_firstboot: bool = True) -> str:
    """The supervisor's unit: notify, watchdog, always restarted. It waits for the first-boot
    unit only when that installs packages it needs (the base-image path); otherwise both run
    at once (host keys and growing the root need nothing of the supervisor's).

    Not after network.target: failberry configures the uplinks itself and follows links and
    addresses as they come (the health server binds the LAN address before networkd gives
    it), and under QEMU systemd-networkd's start alone held it back 7-13 s.

    Nor after sysinit.target (DefaultDependencies=no): that waits for udev's coldplug, 10-12 s
    of a boot under QEMU, and failberry needs none of it (it finds sticks in sysfs and follows
    udev's events as they come, coldplug's among them). It does need the file systems, /tmp
    cleaned, the sysctl files and listed modules applied first. StartupCPUWeight favours it
    over the other services while the system boots."""
    after = f"After={FIRSTBOOT_UNIT}\n" if after_firstboot else ""
    return f"""\
[Unit]
Description=failberry supervisor (mobile backup link, failover, health endpoint)
Documentation=file:///usr/share/doc/failberry/README.md
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service systemd-sysctl.service
After=systemd-modules-load.service
Conflicts=shutdown.target
Before=shutdown.target
{after}Wants=network.target
# A boot loop must not stop the router from coming back: never give up restarting.
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/failberry run -c {CONFIG_PATH}
WatchdogSec={WATCHDOG_SEC}
# Python's start under load on a Pi 2 (its first boot, making host keys) took 45 s before the
# supervisor could say anything; from then on it extends this itself while it makes progress
# (EXTEND_TIMEOUT_USEC). The default 90 s killed such starts, and restarted them for ever.
TimeoutStartSec=3min
StartupCPUWeight=1000
Restart=always
RestartSec=2
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


def firstboot_service() -> str:
    """The one-shot unit that gives each card its own identity and full size, then retires."""
    return f"""\
[Unit]
Description=failberry first boot: host keys, machine id, random seed, grow root, packages
ConditionPathExists=!{FIRSTBOOT_MARKER}
After=local-fs.target systemd-remount-fs.service
Before=ssh.service ssh.socket avahi-daemon.service
Wants=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/failberry/firstboot
StandardOutput=journal+console
TimeoutStartSec=15min

[Install]
WantedBy=multi-user.target
"""


def firstboot_script() -> str:
    """The shell script the first-boot unit runs; each step is idempotent so a retry is safe."""
    return f"""\
#!/bin/sh
# failberry first boot. Written by `failberry build`; runs until it has succeeded once.
set -eu
log() {{ echo "failberry-firstboot: $*"; }}

# 1. Packages the base image lacked, fetched at build time, installed offline.
if ls {DEB_DIR}/*.deb >/dev/null 2>&1; then
    log "installing $(ls {DEB_DIR}/*.deb | wc -l) packages from {DEB_DIR}"
    DEBIAN_FRONTEND=noninteractive dpkg --force-confold -i {DEB_DIR}/*.deb
    rm -f {DEB_DIR}/*.deb
fi

# python-iptables drives the legacy x_tables backend; the admin's `iptables -S` must show
# the same rules, so the iptables command uses it too (Raspberry Pi OS defaults to nft).
for cmd in iptables ip6tables; do
    if [ -x /usr/sbin/$cmd-legacy ]; then
        update-alternatives --set $cmd /usr/sbin/$cmd-legacy >/dev/null || true
    fi
done

# 2. SSH host keys, unique to this card.
if ls /etc/ssh/sshd_config >/dev/null 2>&1; then
    # ed25519 and ECDSA only: every OpenSSH client of the last decade takes them, and an RSA
    # key costs several seconds of the first boot on a Pi (and under emulation).
    log "generating SSH host keys"
    for t in ed25519 ecdsa; do
        key=/etc/ssh/ssh_host_${{t}}_key
        [ -s $key ] || ssh-keygen -q -t $t -N '' -f $key
    done
fi

# 3. machine-id: systemd made a transient one because the file is empty; keep it.
if mountpoint -q /etc/machine-id; then
    systemd-machine-id-setup --commit
elif [ ! -s /etc/machine-id ]; then
    systemd-machine-id-setup
fi

# 4. Random seed for the next boots.
if [ ! -s /var/lib/systemd/random-seed ]; then
    mkdir -p /var/lib/systemd
    (umask 077; dd if=/dev/urandom of=/var/lib/systemd/random-seed bs=512 count=1 2>/dev/null)
fi

# 5. Grow the root partition and file system to the card.
# MAJ:MIN rather than the device name: without an initramfs the root is "/dev/root".
majmin=$(findmnt -n -o MAJ:MIN / | tr -d ' ')
sysdir=$(readlink -f "/sys/dev/block/$majmin")
if [ -e "$sysdir/partition" ]; then
    partnum=$(cat "$sysdir/partition")
    disk="/dev/$(basename "$(dirname "$sysdir")")"
    rootname=$(basename "$sysdir")
    log "growing partition $partnum of $disk"
    if command -v growpart >/dev/null 2>&1; then
        growpart "$disk" "$partnum" || log "growpart: nothing to grow"
    elif command -v sfdisk >/dev/null 2>&1; then
        echo ", +" | sfdisk --no-reread --no-tell-kernel -N "$partnum" "$disk" || true
        partx -u -n "$partnum" "$disk" || true
    else
        log "neither growpart nor sfdisk is installed; the root partition keeps its size"
    fi
    resize2fs "/dev/$rootname" || log "resize2fs failed; the file system keeps its size"
fi

mkdir -p "$(dirname {FIRSTBOOT_MARKER})"
touch {FIRSTBOOT_MARKER}
# --no-reload: the marker already keeps it from running again, and a reload of systemd in
# the middle of the boot costs seconds of PID 1 under emulation.
systemctl --no-reload disable {FIRSTBOOT_UNIT} || true
log "done"
"""


def lan_network(cfg: Config) -> str:
    """systemd-networkd's file for the static LAN address."""
    iface = ipaddress.ip_interface(cfg.lan.address)
    lines = ["[Match]", f"Name={cfg.lan.interface}", "", "[Network]",
             f"Address={iface.with_prefixlen}"]
    lines += [f"DNS={server}" for server in cfg.lan.dns]
    # The supervisor owns the uplinks' routes; the LAN must not grab the default route from
    # router advertisements or a DHCP server it happens to find.
    lines += ["DHCP=no", "IPv6AcceptRA=no", "LinkLocalAddressing=no", "ConfigureWithoutCarrier=yes"]
    if cfg.lan.gateway:
        # A fallback route via the main router; a high metric so the supervisor's routes win.
        lines += ["", "[Route]", f"Gateway={cfg.lan.gateway}", "Metric=1024"]
    return "\n".join(lines) + "\n"


def networkd_boot_dropin() -> str:
    """systemd-networkd gives the LAN its address, without which /health (and SSH) cannot be
    reached; at boot it must not queue for the CPU behind the supervisor's own start, which
    StartupCPUWeight favours. Seen under QEMU: the address came 3 s after failberryd listened,
    networkd's start taking 6 s for 1.3 s of CPU."""
    return ("# Written by failberry: the LAN's address is as urgent as the supervisor at boot.\n"
            "[Service]\nStartupCPUWeight=1000\n")


def resolv_conf(cfg: Config) -> str:
    """A static resolv.conf with the LAN's resolvers."""
    return "# Written by failberry from [lan] dns.\n" + "".join(
        f"nameserver {server}\n" for server in cfg.lan.dns)


def sshd_dropin() -> str:
    """sshd settings: keys only, no root. sshd keeps the first value it reads, and Debian's
    sshd_config includes sshd_config.d/*.conf at its top, so these win."""
    return ("# Written by failberry: SSH keys only, no root login.\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin no\n"
            "PubkeyAuthentication yes\n"
            "PermitEmptyPasswords no\n"
            # Only the host keys the first boot makes (no RSA; see the first-boot script).
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "HostKey /etc/ssh/ssh_host_ecdsa_key\n")


def sudoers(user: str) -> str:
    """sudo without a password for a key-only admin, who has no password to type."""
    return (f"# Written by failberry: {user} logs in with SSH keys only.\n"
            f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")


def hosts(hostname: str) -> str:
    """/etc/hosts naming this machine, as Debian's installer writes it."""
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")


def failberry_launcher() -> str:
    """/usr/bin/failberry on the image: Debian's python3 with the system's packages."""
    return ("#!/usr/bin/python3\n"
            "\"\"\"failberry: installed by the image builder.\"\"\"\n"
            "import sys\n\n"
            "from failberry.cli import main\n\n"
            "if __name__ == \"__main__\":\n"
            "    sys.exit(main())\n")
