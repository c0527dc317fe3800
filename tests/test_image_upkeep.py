"""Months unattended (issue 18): security updates kept off the metered link and rebooting only
in the window, the journal in RAM, failberry's modules compiled at build time, and what
`boot-test` reports from inside the guest. Pure parts here; the slow tier reads the files in
the built image and runs `unattended-upgrade --dry-run` in it under QEMU."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, SSH_KEY
from failberry import config, upkeep
from failberry.errors import ConfigError
from failberry.image import guestreport
from failberry.image import upkeep as image_upkeep
from failberry.image.customise import PACKAGE_DIR, Tree, install_package, install_units
from failberry.image.partimage import boot_and_root
from failberry.image.runner import Runner
from failberry.image.sources import Sources

MINIMAL = f'[admin]\nssh_authorized_keys = ["{SSH_KEY}"]\n[modem]\napn = "internet"\n'


def _cfg(extra: str = "") -> config.Config:
    return config.parse(MINIMAL + extra)


# ------------------------------------------------------------------------------ config


def test_security_updates_are_on_by_default_with_a_night_window_and_never_over_mobile() -> None:
    image = _cfg().image
    assert image.security_updates is True
    assert image.reboot_window == "03:00-05:00"
    assert image.updates_over_mobile is False


@pytest.mark.parametrize("window", ["3-5", "03:00", "25:00-01:00", "03:00-03:00", "x-y"])
def test_a_bad_reboot_window_is_a_config_error_naming_the_key(window: str) -> None:
    with pytest.raises(ConfigError, match=r"image\.reboot_window"):
        _cfg(f'[image]\nreboot_window = "{window}"\n')


def test_an_empty_reboot_window_means_never() -> None:
    assert _cfg('[image]\nreboot_window = ""\n').image.reboot_window == ""


# ----------------------------------------------------------------------- the decisions


def test_window_bounds_and_one_across_midnight() -> None:
    t = dt.time.fromisoformat
    assert upkeep.in_window("03:00-05:00", t("03:00"))
    assert upkeep.in_window("03:00-05:00", t("04:59"))
    assert not upkeep.in_window("03:00-05:00", t("05:00"))
    assert not upkeep.in_window("03:00-05:00", t("02:59"))
    assert upkeep.in_window("23:30-01:00", t("23:45"))
    assert upkeep.in_window("23:30-01:00", t("00:30"))
    assert not upkeep.in_window("23:30-01:00", t("12:00"))


def test_apt_fetches_only_when_the_mobile_link_is_not_carrying_the_traffic() -> None:
    assert upkeep.may_fetch("wired", over_mobile=False)[0]
    assert not upkeep.may_fetch("mobile", over_mobile=False)[0]
    assert not upkeep.may_fetch(None, over_mobile=False)[0]  # unknown counts as metered
    assert upkeep.may_fetch("mobile", over_mobile=True)[0]
    # Sidecar mode: the mobile link is the Pi's only uplink, always the active one; holding
    # updates for a wired uplink would hold them for ever (the shipped default is sidecar).
    ok, why = upkeep.may_fetch("mobile", over_mobile=False, sidecar=True)
    assert ok and "sidecar" in why


def test_a_reboot_needs_a_request_the_window_and_a_non_mobile_uplink() -> None:
    night, noon = dt.time(3, 30), dt.time(12, 0)
    assert upkeep.reboot_due(required=True, window="03:00-05:00", now=night,
                             active_uplink="wired")[0]
    for required, window, now, active, why in (
            (False, "03:00-05:00", night, "wired", "no upgrade asked"),
            (True, "", night, "wired", "no reboot window"),
            (True, "03:00-05:00", noon, "wired", "outside the reboot window"),
            (True, "03:00-05:00", night, "mobile", "mobile link is the active uplink"),
            (True, "03:00-05:00", night, None, "does not say")):
        due, reason = upkeep.reboot_due(required=required, window=window, now=now,
                                        active_uplink=active)
        assert not due and why in reason
    # Sidecar: the window alone decides (the mobile link is always the active uplink there).
    assert upkeep.reboot_due(required=True, window="03:00-05:00", now=night,
                             active_uplink="mobile", sidecar=True)[0]
    assert not upkeep.reboot_due(required=True, window="03:00-05:00", now=noon,
                                 active_uplink="mobile", sidecar=True)[0]


class _Status(http.server.BaseHTTPRequestHandler):
    doc: dict[str, object] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def status_server(tmp_path: Path) -> Iterator[tuple[Path, type[_Status]]]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = tmp_path / "failberry.toml"
    cfg.write_text(MINIMAL + f'[health]\nlisten = "127.0.0.1"\nport = {server.server_port}\n'
                   f'[paths]\nrun_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
                   + GATEWAY)
    try:
        yield cfg, _Status
    finally:
        server.shutdown()
        server.server_close()


# Gateway mode: the Pi is the router, with a wired uplink beside the mobile one.
GATEWAY = ('[failover]\nmode = "gateway"\n[uplink.wired]\ninterface = "eth1"\n'
           '[lan]\ninterface = "eth0"\n')


def _may_fetch(cfg: Path, *extra: str) -> int:
    return subprocess.run([sys.executable, "-m", "failberry.upkeep", "-c", str(cfg),
                           "may-fetch", *extra], capture_output=True, timeout=30).returncode


def test_may_fetch_asks_the_running_supervisor_which_uplink_is_active(
        status_server: tuple[Path, type[_Status]]) -> None:
    cfg, handler = status_server
    handler.doc = {"active_uplink": "wired"}
    assert _may_fetch(cfg) == 0
    handler.doc = {"active_uplink": "mobile"}
    assert _may_fetch(cfg) == 1  # ExecCondition: skipped, not failed
    assert _may_fetch(cfg, "--over-mobile") == 0


def test_may_fetch_without_a_supervisor_skips(tmp_path: Path) -> None:
    cfg = tmp_path / "failberry.toml"
    cfg.write_text(MINIMAL + '[health]\nlisten = "127.0.0.1"\nport = 1\n'
                   f'[paths]\nrun_dir = "{tmp_path}/run"\n' + GATEWAY)
    assert _may_fetch(cfg) == 1


def test_in_sidecar_mode_apt_may_fetch_over_the_pis_only_uplink(
        status_server: tuple[Path, type[_Status]]) -> None:
    # The shipped default (examples/failberry.toml) is sidecar: there the mobile link is
    # always the active uplink, and updates held for another one would never come.
    cfg, handler = status_server
    cfg.write_text(cfg.read_text().replace(GATEWAY, ""))
    handler.doc = {"active_uplink": "mobile"}
    assert _may_fetch(cfg) == 0
    example = (ROOT / "examples/failberry.toml").read_text()
    assert re.search(r'^mode = "sidecar"', example, re.MULTILINE)


# ---------------------------------------------------------------- files on the image


def _tree(tmp_path: Path, extra: str = "") -> tuple[Tree, Path]:
    root = tmp_path / "root"
    root.mkdir()
    tree = Tree(root)
    image_upkeep.configure_upkeep(tree, _cfg(extra))
    return tree, root


def test_updates_on_security_only_no_reboot_of_their_own_and_metered_guard(
        tmp_path: Path) -> None:
    _, root = _tree(tmp_path)
    apt = root / "etc/apt/apt.conf.d"
    assert 'Unattended-Upgrade "1"' in (apt / "20auto-upgrades").read_text()
    uu = (apt / "52failberry-unattended-upgrades").read_text()
    # 52 > Debian's 50unattended-upgrades, whose list (with the plain release) is cleared.
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in uu
    assert re.findall(r'^\s+"(origin=[^"]+)";', uu, re.MULTILINE) == [
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"]
    assert 'Automatic-Reboot "false"' in uu
    assert "bookworm-security" in (root / "etc/apt/sources.list.d/debian-security.list"
                                   ).read_text()
    for unit in ("apt-daily.service", "apt-daily-upgrade.service"):
        dropin = (root / f"etc/systemd/system/{unit}.d/50-failberry-metered.conf").read_text()
        assert "ExecCondition=/usr/bin/python3 -m failberry.upkeep may-fetch" in dropin
    service = (root / "etc/systemd/system/failberry-reboot.service").read_text()
    assert "ConditionPathExists=/run/reboot-required" in service
    assert "reboot-if-due --window 03:00-05:00" in service
    assert (root / "etc/systemd/system/timers.target.wants/failberry-reboot.timer").is_symlink()
    assert 'Dir::Cache::pkgcache ""' in (apt / "90failberry-sd-card").read_text()


def test_updates_over_mobile_drop_the_guard_and_no_window_drops_the_timer(
        tmp_path: Path) -> None:
    _, root = _tree(tmp_path, '[image]\nupdates_over_mobile = true\nreboot_window = ""\n')
    assert not (root / "etc/systemd/system/apt-daily.service.d").exists()
    assert not (root / "etc/systemd/system/failberry-reboot.timer").exists()
    assert (root / "etc/apt/apt.conf.d/52failberry-unattended-upgrades").exists()


def test_security_updates_off_masks_the_timers(tmp_path: Path) -> None:
    _, root = _tree(tmp_path, "[image]\nsecurity_updates = false\n")
    assert 'Unattended-Upgrade "0"' in (root / "etc/apt/apt.conf.d/20auto-upgrades").read_text()
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "unattended-upgrades.service"):
        assert (root / "etc/systemd/system" / unit).readlink() == Path("/dev/null")
    assert not (root / "etc/apt/apt.conf.d/52failberry-unattended-upgrades").exists()
    assert not (root / "etc/systemd/system/failberry-reboot.timer").exists()


def test_ifupdown_which_configures_nothing_is_off_the_boot_path(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    image_upkeep.mask_slow_unused_units(tree)
    for unit in ("networking.service", "ifupdown-pre.service", "sys-kernel-debug.mount",
                 "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
                 "e2scrub_reap.service"):
        assert (tmp_path / "etc/systemd/system" / unit).readlink() == Path("/dev/null")
    generators = tmp_path / "etc/systemd/system-generators"
    for generator in ("systemd-gpt-auto-generator", "systemd-cryptsetup-generator"):
        assert (generators / generator).readlink() == Path("/dev/null")
    # fstab's and the getty's generators stay: the image mounts its boot partition by fstab,
    # and the serial console gets its login prompt from the kernel's command line.
    assert sorted(p.name for p in generators.iterdir()) == sorted(image_upkeep.UNUSED_GENERATORS)
    assert "systemd-fstab-generator" not in image_upkeep.UNUSED_GENERATORS
    assert "systemd-getty-generator" not in image_upkeep.UNUSED_GENERATORS
    # The journal lives in RAM: nothing to flush to /var, and tmpfiles need not wait for it.
    assert (tmp_path / "etc/systemd/system/systemd-journal-flush.service").readlink() == Path(
        "/dev/null")
    # Nothing the router uses: not the supervisor's own, the network's, SSH or the clock.
    for needed in ("systemd-networkd.service", "ssh.service", "systemd-timesyncd.service",
                   "systemd-udevd.service", "dev-mqueue.mount", "kmod-static-nodes.service"):
        assert needed not in image_upkeep.SLOW_UNUSED_UNITS


def test_a_long_exec_command_is_shortened_in_the_report() -> None:
    report = guestreport.GuestReport(execs=[("\nset -eu\nwork=$(mktemp -d)\n", 0, "fine")])
    assert "  exec 'set -eu...' (exit 0):" in report.render()
    assert guestreport.short("true") == "'true'"


def test_the_journal_lives_in_ram_and_is_saved_hourly_and_at_shutdown(tmp_path: Path) -> None:
    overlay = Sources().overlay / "etc/systemd"
    conf = (overlay / "journald.conf.d/90-failberry.conf").read_text()
    assert re.search(r"^Storage=volatile$", conf, re.MULTILINE)
    units = Tree(tmp_path)
    install_units(units)  # enables the overlay's journal units, as `systemctl enable` would
    wants = tmp_path / "etc/systemd/system"
    assert (wants / "timers.target.wants/failberry-journal-save.timer").readlink() == Path(
        "/etc/systemd/system/failberry-journal-save.timer")
    assert (wants / "multi-user.target.wants/failberry-journal-shutdown.service").is_symlink()
    assert "ExecStop=/usr/lib/failberry/journal-save" in (
        overlay / "system/failberry-journal-shutdown.service").read_text()


def _installed(tmp_path: Path, name: str) -> Tree:
    root = tmp_path / name
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").symlink_to(
        f"python{sys.version_info.major}.{sys.version_info.minor}")
    tree = Tree(root)
    install_package(tree, Sources())
    return tree


def test_failberrys_modules_are_compiled_reproducibly_and_import_from_the_pyc(
        tmp_path: Path) -> None:
    first, second = _installed(tmp_path, "a"), _installed(tmp_path, "b")
    assert image_upkeep.compile_package(first) > 50
    assert image_upkeep.compile_package(second) > 50
    pycs = sorted(p for p in first.entries if p.endswith(".pyc"))
    assert f"{PACKAGE_DIR}/__pycache__/upkeep.cpython-{sys.version_info.major}" \
           f"{sys.version_info.minor}.pyc" in pycs
    for pyc in pycs:
        a, b = first.host(pyc).read_bytes(), second.host(pyc).read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), pyc
    # Python uses them as they are (hash-checked against the source, nothing rewritten).
    site = first.host(PACKAGE_DIR).parent
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*.pyc")}
    subprocess.run([sys.executable, "-c", "import failberry.cli, failberry.supervisor"],
                   check=True, env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*.pyc")} == before


def test_no_compiling_for_an_image_of_another_python(tmp_path: Path) -> None:
    tree = _installed(tmp_path, "a")
    tree.host("/usr/bin/python3").unlink()
    tree.host("/usr/bin/python3").symlink_to("python3.99")
    assert image_upkeep.compile_package(tree) == 0
    assert not any(p.endswith(".pyc") for p in tree.entries)


# ------------------------------------------------------------------- the guest report

FACTS_OUT = """\
@@watchdog
watchdog0: i6300ESB timer
@@swap
@@root
rw,noatime,commit=60
@@chain
failberryd.service +4.200s
└─network.target @20.100s
@@start
21000000
@@ready
47250000
@@uptime
40.50
"""


def test_guest_facts_give_the_watchdog_chain_and_start_to_health() -> None:
    report = guestreport.GuestReport()
    # /health answered at host time 100; the script returned at host 110, guest uptime 40.5:
    # /health came at guest 30.5, 9.5 s after failberryd started (guest 21.0).
    guestreport.apply_facts(report, FACTS_OUT, host_health=100.0, host_after=110.0)
    assert report.watchdog == "watchdog0: i6300ESB timer"
    assert report.swap == []
    assert report.start_to_health == pytest.approx(9.5)
    text = "\n".join(report.render())
    assert "watchdog: watchdog0: i6300ESB timer" in text
    assert "swap: none" in text
    assert "failberryd start -> /health: 9.5s" in text
    # READY (guest 47.25) 26.25 s after the start.
    assert report.start_to_ready == pytest.approx(26.25)
    assert "failberryd start -> READY (parts running): 26.2s" in text
    assert "└─network.target @20.100s" in text


def test_no_watchdog_is_reported_as_none() -> None:
    report = guestreport.GuestReport()
    guestreport.apply_facts(report, FACTS_OUT.replace("watchdog0: i6300ESB timer\n", ""),
                            host_health=None, host_after=0.0)
    assert report.watchdog == "none" and report.start_to_health is None


def test_a_supervisor_not_yet_ready_has_no_ready_time() -> None:
    # Still starting: systemd's ActiveEnter time is 0 (before the start).
    report = guestreport.GuestReport()
    guestreport.apply_facts(report, FACTS_OUT.replace("47250000", "0"), host_health=100.0,
                            host_after=110.0)
    assert report.start_to_ready is None and report.start_to_health == pytest.approx(9.5)


def test_idle_writes_are_summed_over_disks_and_scaled_to_a_day() -> None:
    stat = "{} 10 0 100 5 {} 0 {} 7 0 9 12 0 0 0 0"
    out = "\n".join(["@@before", stat.format("vda", 3, 1000), stat.format("mmcblk0", 1, 50),
                     "@@after", stat.format("vda", 9, 1000 + 2048), stat.format("mmcblk0", 1, 50)])
    report = guestreport.GuestReport()
    guestreport.apply_writes(report, out, 60.0)
    assert report.written == 2048 * 512  # 1 MiB in a minute
    assert report.per_day == pytest.approx(1440 * 1024 * 1024)
    assert "idle writes: 1.0 MiB in 60s, 1.4 GiB/day" in "\n".join(report.render())


def test_collect_runs_facts_writes_and_execs_and_keeps_going_after_a_failure() -> None:
    calls: list[list[str]] = []

    def ssh(argv: list[str], timeout: float) -> tuple[int, str, str]:
        calls.append(argv)
        if len(calls) == 1:
            return 0, FACTS_OUT, ""
        if len(calls) == 2:
            return 255, "", "Connection reset"
        return 3, "some output\n", "an error\n"

    report = guestreport.collect(ssh, host_health=1.0, idle_window=5, execs=("false",),
                                 clock=lambda: 2.0)
    assert "sleep 5" in calls[1][-1]
    assert calls[2] == ["false"]
    assert report.execs == [("false", 3, "some output\nan error")]
    assert report.problems == ["idle writes: exit 255: Connection reset"]


# ---------------------------------------------------------------------- slow: the image


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(1800)
def test_the_built_image_holds_the_upkeep_configuration(built: tuple[Path, str]) -> None:
    out, _ = built
    runner = Runner()
    _boot, root = boot_and_root(out)
    fs = f"{out}?offset={root.offset}"

    def cat(path: str) -> str:
        return runner.run(["debugfs", "-R", f"cat {path}", fs], capture=True).stdout.decode()

    def ls(path: str) -> str:
        return runner.run(["debugfs", "-R", f"ls {path}", fs], capture=True).stdout.decode()

    assert "unattended-upgrades" in cat("/var/lib/dpkg/status")
    assert "label=Debian-Security" in cat("/etc/apt/apt.conf.d/52failberry-unattended-upgrades")
    assert 'Update-Package-Lists "1"' in cat("/etc/apt/apt.conf.d/20auto-upgrades")
    assert "may-fetch" in cat("/etc/systemd/system/apt-daily.service.d/50-failberry-metered.conf")
    assert "reboot-if-due --window 03:00-05:00" in cat(
        "/etc/systemd/system/failberry-reboot.service")
    assert "failberry-reboot.timer" in ls("/etc/systemd/system/timers.target.wants")
    assert "Storage=volatile" in cat("/etc/systemd/journald.conf.d/90-failberry.conf")
    assert "noatime" in cat("/etc/fstab")
    assert "cli.cpython-311.pyc" in ls(f"{PACKAGE_DIR}/__pycache__")


def test_the_write_counter_script_runs_in_a_real_shell() -> None:
    # A glob that matches nothing (no /sys/block/sd* here) must not turn into exit 1: that
    # lost the figure in a real boot test.
    res = subprocess.run(["sh", "-c", guestreport.writes_script(0)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    report = guestreport.GuestReport()
    guestreport.apply_writes(report, res.stdout, 1.0)
    if report.problems:  # a machine without any disk QEMU or a Pi would have
        pytest.skip("no vd*, mmcblk* or sd* disk here")
    assert report.written is not None and report.written >= 0


def test_update_stamps_carry_the_time_of_usr_so_sysusers_skips_at_boot(tmp_path: Path) -> None:
    usr = tmp_path / "usr"
    usr.mkdir()
    os.utime(usr, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    tree = Tree(tmp_path)
    image_upkeep.mark_updated(tree)
    for stamp in ("etc/.updated", "var/.updated"):
        # systemd's ConditionNeedsUpdate= holds only while /usr is newer than the stamp
        assert (tmp_path / stamp).stat().st_mtime_ns == usr.stat().st_mtime_ns
        assert (tmp_path / stamp).stat().st_mode & 0o777 == 0o644
