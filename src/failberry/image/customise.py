"""Everything failberry adds to a Debian root file system, as plain file operations on an
unpacked tree: no chroot, no target binaries, the same output for the same inputs.

`customise_rootfs` is a flat list of `verb_noun` steps over a `Tree`, which writes under the
root and records each path it made (kind, mode, owner) so that the base-image path can copy
the same delta into an image it cannot mount.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from failberry.config import Config
from failberry.config_render import dump_toml
from failberry.errors import FailberryError
from failberry.image import ipv6, render
from failberry.image.accounts import ADMIN_GROUPS, AccountDb
from failberry.image.runner import run
from failberry.image.sources import BUILD_ONLY, INSTALLED, Sources

LOG = logging.getLogger(__name__)

PACKAGE_DIR = "/usr/lib/python3/dist-packages/failberry"
UNIT_DIR = "/etc/systemd/system"
SYSTEM_UNITS = "/lib/systemd/system"
# Units that would fight networkd over the LAN (Raspberry Pi OS uses them), and Raspberry Pi
# OS's first-boot user wizard, which would ask for a password on the console.
MASKED_UNITS = ("NetworkManager.service", "NetworkManager-wait-online.service",
                "dhcpcd.service", "userconfig.service")
# What would make every card of one image share an identity, or a stale Raspberry Pi OS note
# ("SSH may not work until a valid user has been set up"). The first-boot unit remakes the rest.
IDENTITY_FILES = ("/etc/ssh/ssh_host_*", "/var/lib/systemd/random-seed",
                  "/var/lib/dbus/machine-id", "/etc/ssh/sshd_config.d/rename_user.conf")


class CustomiseError(FailberryError):
    """The root file system cannot be customised (missing files, a bad tree)."""


@dataclass(frozen=True)
class Entry:
    """One path the customisation made: `kind` is file, dir or symlink."""

    path: str
    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    target: str = ""


@dataclass(frozen=True)
class CustomiseResult:
    """What customise_rootfs did, and how the admin logs in."""

    entries: tuple[Entry, ...]
    removed: tuple[str, ...]
    generated_key: Path | None
    ssh_command: str

    @property
    def files(self) -> tuple[str, ...]:
        """Paths of the regular files written, sorted."""
        return tuple(e.path for e in self.entries if e.kind == "file")


class Tree:
    """Writes under a root directory and records every path it makes or removes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[str, Entry] = {}
        self.removed: set[str] = set()
        self._can_chown = os.geteuid() == 0

    def host(self, path: str) -> Path:
        """The host path of an absolute path inside the image."""
        rel = PurePosixPath(path).relative_to("/")
        if ".." in rel.parts:
            raise CustomiseError(f"{path}: '..' is not allowed in image paths")
        return self.root / rel

    def _own(self, host: Path, mode: int, uid: int, gid: int) -> None:
        if self._can_chown:
            os.chown(host, uid, gid, follow_symlinks=False)
        if not host.is_symlink():
            os.chmod(host, mode)

    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """Make a directory; one that was there before keeps its mode and owner."""
        host = self.host(path)
        if host.is_dir() and not host.is_symlink():
            if path in self.entries:  # ours: made earlier in this run, so ours to set
                self._own(host, mode, uid, gid)
                self._set(path, "dir", mode, uid, gid)
            return
        self._parent(path)
        if host.is_symlink() or host.exists():
            host.unlink()
        host.mkdir()
        self._own(host, mode, uid, gid)
        self._set(path, "dir", mode, uid, gid)

    def _parent(self, path: str) -> None:
        """Make the missing parents of a path, 0755 root, leaving existing ones alone."""
        parent = str(PurePosixPath(path).parent)
        if parent != path and not self.host(parent).is_dir():
            self.mkdir(parent)

    def write(self, path: str, data: str | bytes, mode: int = 0o644, uid: int = 0,
              gid: int = 0) -> None:
        """Write a file, replacing what was there; secrets only ever with a 0600 mode."""
        host = self.host(path)
        self._parent(path)
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if host.is_symlink() or host.is_file():
            host.unlink()
        # Created with its final mode so a secret is never readable, even for a moment.
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        self._own(host, mode, uid, gid)
        self._set(path, "file", mode, uid, gid)

    def rewrite(self, path: str, data: str) -> None:
        """Replace a file's content keeping its mode and owner (/etc/shadow stays root:shadow)."""
        st = self.host(path).lstat()
        self.write(path, data, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)

    def symlink(self, path: str, target: str) -> None:
        """Make a symlink, replacing what was there."""
        host = self.host(path)
        self._parent(path)
        if host.is_symlink() or host.is_file():
            host.unlink()
        elif host.is_dir():
            raise CustomiseError(f"{path}: is a directory, cannot make it a symlink")
        host.symlink_to(target)
        self._set(path, "symlink", 0o777, 0, 0, target=target)

    def remove(self, pattern: str) -> None:
        """Remove the files (not directories) matching a glob, if any."""
        parent = PurePosixPath(pattern).parent
        host_parent = self.host(str(parent))
        if not host_parent.is_dir():
            return
        for host in sorted(host_parent.glob(PurePosixPath(pattern).name)):
            if host.is_dir() and not host.is_symlink():
                continue
            host.unlink()
            path = str(parent / host.name)
            self.entries.pop(path, None)
            self.removed.add(path)

    def read(self, path: str) -> str:
        """A text file of the tree; a missing one is a CustomiseError naming it."""
        try:
            return self.host(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CustomiseError(f"{self.root}: {path} is missing; is this a Debian root file "
                                 "system?") from None

    def _set(self, path: str, kind: str, mode: int, uid: int, gid: int, *,
             target: str = "") -> None:
        self.entries[path] = Entry(path, kind, mode, uid, gid, target)
        self.removed.discard(path)


# ---------------------------------------------------------------------------------------------
# Steps


def copy_overlay(tree: Tree, overlay: Path) -> None:
    """Copy the overlay (data/rootfs-overlay/) verbatim: files 0644 (0755 if executable in
    git), owner root."""
    if not overlay.is_dir():
        LOG.info("no overlay at %s; skipping", overlay)
        return
    for host in sorted(overlay.rglob("*")):
        path = "/" + host.relative_to(overlay).as_posix()
        if host.is_symlink():
            tree.symlink(path, os.readlink(host))
        elif host.is_dir():
            tree.mkdir(path)
        else:
            executable = host.stat().st_mode & 0o111
            tree.write(path, host.read_bytes(), 0o755 if executable else 0o644)


def install_package(tree: Tree, sources: Sources) -> None:
    """The failberry package into Debian's python3 path, and its /usr/bin launcher."""
    src = sources.package
    if not (src / "__init__.py").is_file():
        raise CustomiseError(f"{src}: not the failberry package (no __init__.py)")
    count = 0
    for host in sorted(src.rglob("*")):
        rel = host.relative_to(src)
        if "__pycache__" in rel.parts or host.suffix in (".pyc", ".pyo") or host.is_symlink():
            continue
        if any(rel.is_relative_to(d) for d in BUILD_ONLY):
            continue
        path = f"{PACKAGE_DIR}/{rel.as_posix()}"
        if host.is_dir():
            tree.mkdir(path)
        else:
            tree.write(path, host.read_bytes())
            count += 1
    tree.write("/usr/bin/failberry", render.failberry_launcher(), 0o755)
    readme = sources.readme()
    if readme is not None:
        tree.write("/usr/share/doc/failberry/README.md", readme)
    LOG.info("installed failberry: %d files in %s", count, PACKAGE_DIR)


def write_config(tree: Tree, cfg: Config) -> None:
    """The effective config, secrets inlined, readable by root only."""
    tree.mkdir("/etc/failberry", 0o755)
    tree.write(render.CONFIG_PATH, dump_toml(cfg, reveal_secrets=True), 0o600)


def enable_unit(tree: Tree, unit: str, source: str, target: str = "multi-user.target") -> None:
    """`systemctl enable` as a symlink: TARGET.wants/UNIT -> the unit file."""
    tree.symlink(f"{UNIT_DIR}/{target}.wants/{unit}", f"{source}/{unit}")


def install_units(tree: Tree, debs: Sequence[Path] = ()) -> None:
    """failberryd and the first-boot unit, enabled; `debs` for it to install offline."""
    tree.write(f"{UNIT_DIR}/{render.SERVICE_UNIT}",
               render.failberryd_service(after_firstboot=bool(debs)))
    tree.write(f"{UNIT_DIR}/{render.FIRSTBOOT_UNIT}", render.firstboot_service())
    tree.write("/usr/lib/failberry/firstboot", render.firstboot_script(), 0o755)
    tree.mkdir(render.DEB_DIR)
    for deb in sorted(debs, key=lambda p: p.name):
        tree.write(f"{render.DEB_DIR}/{deb.name}", deb.read_bytes())
    enable_unit(tree, render.SERVICE_UNIT, UNIT_DIR)
    enable_unit(tree, render.FIRSTBOOT_UNIT, UNIT_DIR)
    # Debian's openssh-server enables ssh itself; Raspberry Pi OS only with a boot-partition
    # flag file. Enabling it here makes both the same.
    enable_unit(tree, "ssh.service", SYSTEM_UNITS)
    # The in-RAM journal's copy on the card (the overlay's units): saved by a timer and at
    # shutdown. Enabled here, not as overlay symlinks, which a wheel would turn into files.
    enable_unit(tree, "failberry-journal-save.timer", UNIT_DIR, "timers.target")
    enable_unit(tree, "failberry-journal-shutdown.service", UNIT_DIR)


def configure_network(tree: Tree, cfg: Config) -> None:
    """Static LAN address with systemd-networkd; competing network managers masked."""
    tree.write(f"/etc/systemd/network/10-failberry-{cfg.lan.interface}.network",
               render.lan_network(cfg))
    enable_unit(tree, "systemd-networkd.service", SYSTEM_UNITS)
    enable_unit(tree, "systemd-networkd.socket", SYSTEM_UNITS, "sockets.target")
    tree.write(f"{UNIT_DIR}/systemd-networkd.service.d/50-failberry-boot.conf",
               render.networkd_boot_dropin())
    tree.symlink(f"{UNIT_DIR}/dbus-org.freedesktop.network1.service",
                 f"{SYSTEM_UNITS}/systemd-networkd.service")
    for unit in MASKED_UNITS:
        tree.symlink(f"{UNIT_DIR}/{unit}", "/dev/null")
    tree.write("/etc/resolv.conf", render.resolv_conf(cfg))
    tree.write(ipv6.SYSCTL_FILE, ipv6.ipv6_sysctls(cfg))


def set_hostname(tree: Tree, cfg: Config) -> None:
    """/etc/hostname and /etc/hosts; avahi announces the same name as NAME.local."""
    tree.write("/etc/hostname", cfg.image.hostname + "\n")
    tree.write("/etc/hosts", render.hosts(cfg.image.hostname))


def set_timezone(tree: Tree, cfg: Config) -> None:
    """/etc/localtime and /etc/timezone, as tzdata's configuration writes them."""
    tree.symlink("/etc/localtime", f"/usr/share/zoneinfo/{cfg.admin.timezone}")
    tree.write("/etc/timezone", cfg.admin.timezone + "\n")


def add_admin(tree: Tree, cfg: Config, keys: tuple[str, ...]) -> None:
    """The admin user with its SSH keys; root and every other login locked; sshd keys-only."""
    db = AccountDb.parse(tree.read("/etc/passwd"), tree.read("/etc/shadow"),
                         tree.read("/etc/group"), tree.read("/etc/gshadow"))
    user = cfg.admin.user
    home = f"/home/{user}"
    uid, gid = db.add_user(user, home=home, shell="/bin/bash", gecos="failberry admin")
    groups = db.add_to_groups(user, ADMIN_GROUPS)
    secret = cfg.admin.password_hash
    db.set_password(user, secret.reveal() if secret is not None else "*")
    db.set_password("root", "*")
    for other in db.login_users():
        if other != user:
            db.lock(other)
    for name, text in db.render().items():
        tree.rewrite(f"/etc/{name}", text)
    tree.mkdir("/home")
    tree.mkdir(home, 0o700, uid, gid)
    skel = tree.host("/etc/skel")
    if skel.is_dir():
        for host in sorted(skel.iterdir()):
            if host.is_file() and not host.is_symlink():
                tree.write(f"{home}/{host.name}", host.read_bytes(), 0o644, uid, gid)
    tree.mkdir(f"{home}/.ssh", 0o700, uid, gid)
    tree.write(f"{home}/.ssh/authorized_keys", "".join(k + "\n" for k in keys), 0o600, uid, gid)
    if secret is None:
        tree.write("/etc/sudoers.d/010-failberry-admin", render.sudoers(user), 0o440)
    tree.write("/etc/ssh/sshd_config.d/10-failberry.conf", render.sshd_dropin())
    LOG.info("admin user %s (uid %d) in groups %s, %d SSH key(s), password %s", user, uid,
             ",".join(groups), len(keys), "hash set" if secret is not None else "none")


def clear_identity(tree: Tree) -> None:
    """No host keys, machine-id or random seed baked in: the first-boot unit makes them."""
    for pattern in IDENTITY_FILES:
        if pattern == "/var/lib/dbus/machine-id" and tree.host(pattern).is_symlink():
            continue  # Debian's link to /etc/machine-id is fine
        tree.remove(pattern)
    # Empty, not missing: systemd then treats the boot as the first and makes a new id.
    tree.write("/etc/machine-id", b"", 0o444)


def ensure_admin_key(cfg: Config, out_dir: Path) -> tuple[tuple[str, ...], Path | None]:
    """The configured keys; with none, a key pair beside the image (kept across rebuilds)."""
    if cfg.admin.ssh_authorized_keys:
        return cfg.admin.ssh_authorized_keys, None
    key = out_dir / f"{cfg.image.hostname}-admin_ed25519"
    pub = key.with_name(key.name + ".pub")
    if not (key.is_file() and pub.is_file()):
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (key, pub):
            stale.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
             f"{cfg.admin.user}@{cfg.image.hostname}", "-f", key])
        LOG.info("no SSH key in the config: made %s", key)
    os.chmod(key, 0o600)
    return (pub.read_text(encoding="utf-8").strip(),), key


def ssh_command(cfg: Config, key: Path | None) -> str:
    """The exact command that logs in to the booted Pi."""
    target = f"{cfg.admin.user}@{cfg.image.hostname}.local"
    return shlex.join(["ssh", "-i", str(key), target] if key else ["ssh", target])


def customise_rootfs(cfg: Config, root: Path, *, out_dir: Path, debs: Sequence[Path] = (),
                     sources: Sources = INSTALLED) -> CustomiseResult:
    """Write everything failberry adds into the Debian root file system at `root`; `debs` are
    packages the first boot installs offline (the base-image path); `sources` is where the
    package, the overlay and the README come from (this installed package)."""
    if not root.is_dir():
        raise CustomiseError(f"{root}: not a directory")
    keys, generated = ensure_admin_key(cfg, out_dir)
    tree = Tree(root)
    copy_overlay(tree, sources.overlay)
    install_package(tree, sources)
    write_config(tree, cfg)
    install_units(tree, debs)
    configure_network(tree, cfg)
    set_hostname(tree, cfg)
    set_timezone(tree, cfg)
    add_admin(tree, cfg, keys)
    clear_identity(tree)
    from failberry.image import upkeep  # it builds on this module's Tree

    upkeep.configure_upkeep(tree, cfg)
    upkeep.mask_slow_unused_units(tree)
    upkeep.compile_package(tree)
    upkeep.mark_updated(tree)
    entries = tuple(tree.entries[p] for p in sorted(tree.entries))
    LOG.info("customised %s: %d paths written, %d removed", root, len(entries),
             len(tree.removed))
    return CustomiseResult(entries, tuple(sorted(tree.removed)), generated,
                           ssh_command(cfg, generated))

