"""customise_rootfs on a root file system laid out like Debian bookworm's base (its account
files as mmdebstrap leaves them): users, modes, owners, units, sshd, identity, determinism."""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, SSH_KEY
from failberry import config
from failberry.image import render
from failberry.image.accounts import AccountDb, AccountsError
from failberry.image.customise import CustomiseError, CustomiseResult, customise_rootfs

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
"""
SHADOW = """\
root:*:19700:0:99999:7:::
daemon:*:19700:0:99999:7:::
bin:*:19700:0:99999:7:::
sys:*:19700:0:99999:7:::
sync:*:19700:0:99999:7:::
_apt:*:19700:0:99999:7:::
nobody:*:19700:0:99999:7:::
systemd-network:!*:19700::::::
sshd:*:19700:0:99999:7:::
"""
GROUPS = ["root:0", "daemon:1", "bin:2", "sys:3", "adm:4", "tty:5", "disk:6", "dialout:20",
          "sudo:27", "audio:29", "shadow:42", "utmp:43", "plugdev:46", "staff:50", "users:100",
          "nogroup:65534", "systemd-journal:999", "systemd-network:998", "netdev:101"]
GROUP = "".join(f"{name}:x:{gid}:\n" for name, gid in (g.split(":") for g in GROUPS))
GSHADOW = "".join(f"{g.split(':')[0]}:*::\n" for g in GROUPS)
SHADOW_GID = 42

PIN = "4711"
TSIG = "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cw=="
HASH = "$y$j9T$abcdefghijklmnopqrstu.$" + "A" * 43


def make_rootfs(root: Path) -> Path:
    """The part of a bookworm base tree customise_rootfs reads or replaces."""
    for d in ("etc/ssh/sshd_config.d", "etc/sudoers.d", "etc/skel", "etc/systemd/system",
              "var/lib/systemd", "var/lib/dbus", "usr/share/zoneinfo/Europe", "root", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, text, mode, gid in (("passwd", PASSWD, 0o644, 0), ("shadow", SHADOW, 0o640,
                                  SHADOW_GID), ("group", GROUP, 0o644, 0),
                                  ("gshadow", GSHADOW, 0o640, SHADOW_GID)):
        path = root / "etc" / name
        path.write_text(text)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, 0, gid)
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/systemd/random-seed").write_bytes(os.urandom(512))
    (root / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    (root / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n"
                                               "KbdInteractiveAuthentication no\nUsePAM yes\n")
    for kind in ("rsa", "ecdsa", "ed25519"):
        (root / f"etc/ssh/ssh_host_{kind}_key").write_text("PRIVATE")
        (root / f"etc/ssh/ssh_host_{kind}_key.pub").write_text("PUBLIC")
    (root / "etc/skel/.bashrc").write_text("# bashrc\n")
    (root / "etc/skel/.profile").write_text("# profile\n")
    (root / "usr/share/zoneinfo/Europe/Berlin").write_bytes(b"TZif2")
    return root


def make_config(tmp: Path, *, keys: bool = True, password: bool = False) -> config.Config:
    lines = ["[image]", 'hostname = "fbtest"', "[admin]", 'user = "ops"',
             'timezone = "Europe/Berlin"']
    if keys:
        lines.append(f'ssh_authorized_keys = ["{SSH_KEY}"]')
    if password:
        lines.append(f'password_hash = "{HASH}"')
    lines += ["[lan]", 'address = "10.1.2.3/24"', 'gateway = "10.1.2.1"',
              "[modem]", 'apn = "internet"', f'pin = "{PIN}"',
              "[dyndns]", 'provider = "rfc2136"', 'name = "pi.example.org"',
              "[dyndns.rfc2136]", 'server = "ns.example.org"', 'zone = "example.org"',
              'tsig_key_name = "pi.example.org"', f'tsig_secret = "{TSIG}"']
    return config.parse("\n".join(lines) + "\n", base_dir=tmp)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "root")


def customise(root: Path, cfg: config.Config, out: Path) -> CustomiseResult:
    return customise_rootfs(cfg, root, out_dir=out)


def accounts(root: Path) -> AccountDb:
    return AccountDb.parse(*((root / "etc" / n).read_text()
                             for n in ("passwd", "shadow", "group", "gshadow")))


def test_admin_user_is_key_only_with_home_owned_by_it(rootfs: Path, tmp_path: Path) -> None:
    result = customise(rootfs, make_config(tmp_path), tmp_path / "out")
    db = accounts(rootfs)
    user = db.user("ops")
    assert user is not None
    assert user[2] == user[3] == "1000"
    assert user[5:] == ["/home/ops", "/bin/bash"]
    shadow = {row[0]: row for row in db.shadow}
    assert shadow["ops"][1] == "*"  # no password, but not "!" (sshd would refuse keys)
    assert shadow["root"][1] == "*"
    members = {row[0]: row[3].split(",") for row in db.group}
    for group in ("sudo", "adm", "dialout", "netdev", "plugdev", "systemd-journal"):
        assert "ops" in members[group], group
    assert members["ops"] == [""]
    gmembers = {row[0]: row[3].split(",") for row in db.gshadow}
    assert "ops" in gmembers["sudo"]
    home = rootfs / "home/ops"
    for path, mode in ((home, 0o700), (home / ".ssh", 0o700),
                       (home / ".ssh/authorized_keys", 0o600), (home / ".bashrc", 0o644)):
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == mode, path
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (1000, 1000), path
    assert (home / ".ssh/authorized_keys").read_text() == SSH_KEY + "\n"
    sudoers = rootfs / "etc/sudoers.d/010-failberry-admin"
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440
    assert "ops ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers.read_text()
    assert result.generated_key is None
    assert result.ssh_command == "ssh ops@fbtest.local"


def test_account_files_keep_mode_owner_and_untouched_lines(rootfs: Path, tmp_path: Path) -> None:
    customise(rootfs, make_config(tmp_path), tmp_path / "out")
    for name, mode in (("passwd", 0o644), ("shadow", 0o640), ("group", 0o644),
                       ("gshadow", 0o640)):
        st = (rootfs / "etc" / name).stat()
        assert stat.S_IMODE(st.st_mode) == mode, name
        if os.geteuid() == 0 and name in ("shadow", "gshadow"):
            assert st.st_gid == SHADOW_GID
    passwd = (rootfs / "etc/passwd").read_text()
    assert passwd.startswith(PASSWD)
    assert passwd.count("\n") == PASSWD.count("\n") + 1


def test_password_hash_is_used_and_sudo_then_asks_for_it(rootfs: Path, tmp_path: Path) -> None:
    customise(rootfs, make_config(tmp_path, password=True), tmp_path / "out")
    shadow = {row[0]: row for row in accounts(rootfs).shadow}
    assert shadow["ops"][1] == HASH
    assert not (rootfs / "etc/sudoers.d/010-failberry-admin").exists()


def test_other_logins_are_locked_and_an_existing_user_is_reused(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    with (root / "etc/passwd").open("a") as f:
        f.write("pi:x:1000:1000:,,,:/home/pi:/bin/bash\n")
    with (root / "etc/shadow").open("a") as f:
        f.write("pi:$6$salt$hashhashhash:19700:0:99999:7:::\n")
    with (root / "etc/group").open("a") as f:
        f.write("pi:x:1000:\n")
    customise(root, make_config(tmp_path), tmp_path / "out")
    db = accounts(root)
    shadow = {row[0]: row for row in db.shadow}
    assert shadow["pi"][1] == "!$6$salt$hashhashhash"
    ops = db.user("ops")
    assert ops is not None and ops[2] == "1001"


def test_sshd_drop_in_is_keys_only(rootfs: Path, tmp_path: Path) -> None:
    customise(rootfs, make_config(tmp_path), tmp_path / "out")
    settings = dict(line.split(None, 1) for line in
                    (rootfs / "etc/ssh/sshd_config.d/10-failberry.conf").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert settings["PasswordAuthentication"] == "no"
    assert settings["KbdInteractiveAuthentication"] == "no"
    assert settings["PermitRootLogin"] == "no"


@pytest.mark.root
def test_sshd_reads_the_drop_in_before_debian_defaults(rootfs: Path, tmp_path: Path) -> None:
    """The real sshd (test mode) with a main config shaped like Debian's: the Include at the
    top, then settings that would allow passwords; ours must win."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("sshd is not installed; scripts/apt/image-custom.txt lists openssh-server")
    customise(rootfs, make_config(tmp_path), tmp_path / "out")
    hostkey = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)],
                   check=True, timeout=30)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {rootfs}/etc/ssh/sshd_config.d/*.conf\n"
                    "PasswordAuthentication yes\nKbdInteractiveAuthentication yes\n"
                    "PermitRootLogin yes\nUsePAM yes\n")
    privsep = Path("/run/sshd")  # sshd -T insists on its privilege separation directory
    made = not privsep.exists()
    privsep.mkdir(mode=0o755, exist_ok=True)
    try:
        proc = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(main), "-h", str(hostkey)],
                              capture_output=True, text=True, timeout=30)
    finally:
        if made:
            privsep.rmdir()
    assert proc.returncode == 0, proc.stderr
    effective = proc.stdout.lower().splitlines()
    assert "passwordauthentication no" in effective
    assert "permitrootlogin no" in effective
    assert "kbdinteractiveauthentication no" in effective


def test_config_is_root_only_and_the_only_home_of_secrets(rootfs: Path, tmp_path: Path) -> None:
    result = customise(rootfs, make_config(tmp_path), tmp_path / "out")
    cfg_file = rootfs / "etc/failberry/failberry.toml"
    assert stat.S_IMODE(cfg_file.stat().st_mode) == 0o600
    # The rendered config reads back to the same settings, secrets included.
    back = config.parse(cfg_file.read_text(), base_dir=tmp_path)
    assert back.modem.pin is not None and back.modem.pin.reveal() == PIN
    assert back.dyndns.rfc2136.tsig_secret == make_config(tmp_path).dyndns.rfc2136.tsig_secret
    holders = []
    for path in result.files:
        data = (rootfs / path.lstrip("/")).read_bytes()
        if PIN.encode() in data or TSIG.encode() in data:
            holders.append(path)
    assert holders == ["/etc/failberry/failberry.toml"]
    for entry in result.entries:
        if entry.kind == "file" and entry.mode & 0o004:
            data = (rootfs / entry.path.lstrip("/")).read_bytes()
            assert TSIG.encode() not in data and HASH.encode() not in data, entry.path


def _all_values(unit: str, key: str) -> set[str]:
    """Every value of KEY in a unit's text, over repeated lines (configparser keeps the last)."""
    return {word for line in unit.splitlines() if line.startswith(f"{key}=")
            for word in line.split("=", 1)[1].split()}


def test_units_are_enabled_and_well_formed(rootfs: Path, tmp_path: Path) -> None:
    customise(rootfs, make_config(tmp_path), tmp_path / "out")
    system = rootfs / "etc/systemd/system"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((system / "failberryd.service").read_text())
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["Restart"] == "always"
    assert int(unit["Service"]["WatchdogSec"]) > 0
    # Longer than systemd's 90 s: a Pi 2 under load took 45 s before it could extend it.
    assert unit["Service"]["TimeoutStartSec"] == "3min"
    # It starts beside systemd-networkd, not after network.target (nor, without packages to
    # install, after the first-boot unit); the base-image path waits for that unit. Nor after
    # sysinit.target (udev's coldplug): after the file systems, /tmp's clean-up, the sysctls
    # and modules; stopped before the file systems at shutdown.
    unit_text = (system / "failberryd.service").read_text()
    after = _all_values(unit_text, "After")
    assert unit["Unit"]["DefaultDependencies"] == "no"
    assert after == {"local-fs.target", "systemd-tmpfiles-setup.service",
                     "systemd-sysctl.service", "systemd-modules-load.service"}
    assert _all_values(unit_text, "Conflicts") == _all_values(unit_text, "Before") \
        == {"shutdown.target"}
    assert unit["Unit"]["Wants"] == "network.target"
    assert int(unit["Service"]["StartupCPUWeight"]) > 100
    base = _all_values(render.failberryd_service(after_firstboot=True), "After")
    assert base == after | {"failberry-firstboot.service"}
    assert unit["Service"]["ExecStart"] == \
        "/usr/bin/failberry run -c /etc/failberry/failberry.toml"
    wants = system / "multi-user.target.wants"
    assert os.readlink(wants / "failberryd.service") == "/etc/systemd/system/failberryd.service"
    assert os.readlink(wants / "failberry-firstboot.service") == \
        "/etc/systemd/system/failberry-firstboot.service"
    assert os.readlink(wants / "systemd-networkd.service") == \
        "/lib/systemd/system/systemd-networkd.service"
    assert os.readlink(system / "userconfig.service") == "/dev/null"
    first = configparser.ConfigParser(strict=False, interpolation=None)
    first.optionxform = str  # type: ignore[assignment,method-assign]
    first.read_string((system / "failberry-firstboot.service").read_text())
    assert first["Unit"]["ConditionPathExists"].startswith("!/")
    assert first["Service"]["Type"] == "oneshot"
    assert "ssh.service" in first["Unit"]["Before"]
    script = rootfs / "usr/lib/failberry/firstboot"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    text = script.read_text()
    for needed in ("ssh-keygen -q -t $t", "systemd-machine-id-setup", "random-seed", "resize2fs",
                   "systemctl --no-reload disable failberry-firstboot.service"):
        assert needed in text
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)
    if Path("/usr/bin/systemd-analyze").exists():
        # systemd's own parser must not complain about our units ("FILE:LINE: message");
        # missing targets in this fake tree are another matter.
        for name in ("failberryd.service", "failberry-firstboot.service"):
            proc = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                   str(system / name)], capture_output=True, text=True,
                                  timeout=60)
            assert not re.search(r"\.service:\d+:", proc.stderr), proc.stderr


def test_network_hostname_timezone(rootfs: Path, tmp_path: Path) -> None:
    customise(rootfs, make_config(tmp_path), tmp_path / "out")
    net = (rootfs / "etc/systemd/network/10-failberry-eth0.network").read_text()
    assert "Name=eth0" in net and "Address=10.1.2.3/24" in net and "Gateway=10.1.2.1" in net
    assert (rootfs / "etc/hostname").read_text() == "fbtest\n"
    assert "127.0.1.1\tfbtest" in (rootfs / "etc/hosts").read_text()
    assert os.readlink(rootfs / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert (rootfs / "etc/timezone").read_text() == "Europe/Berlin\n"
    assert "nameserver 1.1.1.1" in (rootfs / "etc/resolv.conf").read_text()
    dropin = rootfs / "etc/systemd/system/systemd-networkd.service.d/50-failberry-boot.conf"
    assert "[Service]\nStartupCPUWeight=1000\n" in dropin.read_text()
    # The last step: /usr is not newer than the stamps, so sysusers skips at boot.
    for stamp in ("etc/.updated", "var/.updated"):
        assert (rootfs / stamp).stat().st_mtime_ns == (rootfs / "usr").stat().st_mtime_ns


def test_no_identity_is_baked_in(rootfs: Path, tmp_path: Path) -> None:
    result = customise(rootfs, make_config(tmp_path), tmp_path / "out")
    assert list((rootfs / "etc/ssh").glob("ssh_host_*")) == []
    machine_id = rootfs / "etc/machine-id"
    assert machine_id.is_file() and machine_id.read_bytes() == b""
    assert not (rootfs / "var/lib/systemd/random-seed").exists()
    assert (rootfs / "var/lib/dbus/machine-id").is_symlink()
    assert "/etc/ssh/ssh_host_ed25519_key" in result.removed
    assert "/var/lib/systemd/random-seed" in result.removed


def test_package_and_launcher_are_installed(rootfs: Path, tmp_path: Path) -> None:
    customise(rootfs, make_config(tmp_path), tmp_path / "out")
    pkg = rootfs / "usr/lib/python3/dist-packages/failberry"
    assert (pkg / "cli.py").read_bytes() == (ROOT / "src/failberry/cli.py").read_bytes()
    assert not list(pkg.rglob("__pycache__"))
    # The build's own recipe and overlay stay off the image's copy; other package data is there.
    assert not (pkg / "data/image").exists() and not (pkg / "data/rootfs-overlay").exists()
    assert (pkg / "data/failberry-hostguard.service").is_file()
    readme = rootfs / "usr/share/doc/failberry/README.md"
    assert readme.read_bytes() == (ROOT / "README.md").read_bytes()
    launcher = rootfs / "usr/bin/failberry"
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    assert launcher.read_text().startswith("#!/usr/bin/python3\n")
    # The installed copy runs: python3 with only the image's package path finds it.
    proc = subprocess.run(["python3", "-S", str(launcher), "--version"],
                          env={"PYTHONPATH": str(pkg.parent), "PATH": os.environ["PATH"]},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("failberry ")
    assert (rootfs / "etc/sysctl.d/90-failberry.conf").read_text().count("ip_forward = 1") == 1
    assert (rootfs / "etc/usb_modeswitch.d/19d2:2000").is_file()
    # A headless router loads none of the VideoCore's drivers (vchiq oopsed QEMU's raspi3b).
    headless = (rootfs / "etc/modprobe.d/failberry-headless.conf").read_text().splitlines()
    assert "blacklist vchiq" in headless and "blacklist snd_bcm2835" in headless


def test_generated_key_when_config_has_none(rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = customise(rootfs, make_config(tmp_path, keys=False), out)
    key = result.generated_key
    assert key is not None and key.parent == out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = key.with_name(key.name + ".pub").read_text().strip()
    assert pub.startswith("ssh-ed25519 ")
    assert (rootfs / "home/ops/.ssh/authorized_keys").read_text() == pub + "\n"
    assert result.ssh_command == f"ssh -i {key} ops@fbtest.local"
    # The key matches its public half, and a rebuild keeps it (the admin's login keeps working).
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                             text=True, check=True, timeout=30).stdout.split()[:2]
    assert derived == pub.split()[:2]
    again = customise(make_rootfs(tmp_path / "root2"), make_config(tmp_path, keys=False), out)
    assert again.generated_key == key
    assert key.with_name(key.name + ".pub").read_text().strip() == pub


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(root)} {st.st_mode:o} {st.st_uid} {st.st_gid}\n".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_two_runs_give_the_same_tree(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    a = make_rootfs(tmp_path / "a")
    b = make_rootfs(tmp_path / "b")
    for root in (a, b):
        # make_rootfs writes a random seed; it is removed, so it cannot differ the trees.
        customise(root, cfg, tmp_path / "out")
    assert _digest(a) == _digest(b)
    # And customising again changes nothing.
    before = _digest(a)
    result = customise(a, cfg, tmp_path / "out")
    assert _digest(a) == before
    assert [e.path for e in result.entries] == sorted(e.path for e in result.entries)


def test_missing_account_files_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(CustomiseError, match="/etc/passwd is missing"):
        customise(root, make_config(tmp_path), tmp_path / "out")


def test_malformed_passwd_is_reported_with_its_line() -> None:
    with pytest.raises(AccountsError, match="/etc/passwd line 2"):
        AccountDb.parse("root:x:0:0:root:/root:/bin/bash\nbroken\n", "", "", "")
