"""`failberry hostguard install | check | uninstall` against a temporary root with a fake
/proc/sys tree. Every CLI call goes through `hostguard()`, which always passes `--root`: the
host's own /proc/sys is never a target (and `live_procsys` refuses a mounted procfs anyway)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from failberry.config import HostguardConfig
from failberry.hostguard import nvme, sysctls

REAL = Path("/proc/sys/kernel")
KEYS = ("hung_task_panic", "hung_task_timeout_secs", "panic")


@pytest.fixture(autouse=True, scope="module")
def _host_untouched() -> Iterator[None]:
    """The host's hung-task settings are the same after these tests as before."""
    before = {k: (REAL / k).read_text() for k in KEYS if (REAL / k).exists()}
    yield
    after = {k: (REAL / k).read_text() for k in KEYS if (REAL / k).exists()}
    assert after == before


def hostguard(root: Path, *args: str) -> tuple[int, str]:
    """Run `failberry hostguard ACTION --root ROOT ...`; returns (exit code, stdout+stderr)."""
    action, rest = args[0], args[1:]
    proc = run_cli(["hostguard", action, "--root", str(root), *rest])
    return proc.returncode, proc.stdout + proc.stderr


def fake_root(tmp_path: Path, panic: str = "0", timeout: str = "120", hung: str = "0") -> Path:
    root = tmp_path / "root"
    kernel = root / "proc/sys/kernel"
    kernel.mkdir(parents=True)
    for key, value in (("panic", panic), ("hung_task_timeout_secs", timeout),
                       ("hung_task_panic", hung)):
        (kernel / key).write_text(f"{value}\n")
    return root


def live(root: Path) -> dict[str, str]:
    return {k: (root / "proc/sys/kernel" / k).read_text().strip() for k in KEYS}


def test_install_check_uninstall_round_trip(tmp_path: Path) -> None:
    root = fake_root(tmp_path, panic="0", timeout="480", hung="0")
    code, out = hostguard(root, "check")
    assert code == 1, out
    assert "DRIFT" in out

    code, out = hostguard(root, "install")
    assert code == 0, out
    assert live(root) == {"hung_task_panic": "1", "hung_task_timeout_secs": "120", "panic": "5"}
    dropin = root / sysctls.DROPIN
    text = dropin.read_text()
    assert "kernel.hung_task_panic = 1" in text and "kernel.panic = 5" in text
    assert json.loads((root / sysctls.STATE).read_text()) == {
        "kernel.hung_task_panic": "0", "kernel.hung_task_timeout_secs": "480", "kernel.panic": "0"}

    code, out = hostguard(root, "check")
    assert code == 0, out
    assert "DRIFT" not in out and "kernel.hung_task_panic" in out

    code, out = hostguard(root, "uninstall")
    assert code == 0, out
    assert live(root) == {"hung_task_panic": "0", "hung_task_timeout_secs": "480", "panic": "0"}
    assert not dropin.exists()
    assert not (root / sysctls.STATE).exists()


def test_install_is_idempotent_and_keeps_the_first_previous_values(tmp_path: Path) -> None:
    root = fake_root(tmp_path, panic="0")
    assert hostguard(root, "install")[0] == 0
    dropin = root / sysctls.DROPIN
    first = dropin.stat().st_mtime_ns, (root / sysctls.STATE).read_text()
    code, out = hostguard(root, "install")
    assert code == 0
    assert out.strip().splitlines()[0] == "nothing to change"
    assert (dropin.stat().st_mtime_ns, (root / sysctls.STATE).read_text()) == first
    # A changed config re-applies, but the recorded values stay the ones from before us.
    cfg = tmp_path / "hg.toml"
    cfg.write_text("[hostguard]\npanic = 10\nhung_task_timeout = 60\n")
    code, out = hostguard(root, "install", "-c", str(cfg))
    assert code == 0, out
    assert "set kernel.panic: 5 -> 10 (live)" in out
    assert live(root)["panic"] == "10"
    assert json.loads((root / sysctls.STATE).read_text())["kernel.panic"] == "0"
    assert hostguard(root, "uninstall")[0] == 0
    assert live(root)["panic"] == "0"


def test_drift_is_found_in_running_values_and_in_later_files(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    assert hostguard(root, "install")[0] == 0
    (root / "proc/sys/kernel/hung_task_timeout_secs").write_text("600\n")
    code, out = hostguard(root, "check")
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("kernel.hung_task_timeout_secs"))
    assert "600" in line and "running value differs" in line
    assert hostguard(root, "install")[0] == 0
    assert hostguard(root, "check")[0] == 0
    # A file sorted after ours wins at boot: that is drift too, and check names the file.
    later = root / "etc/sysctl.d/99-local.conf"
    later.write_text("kernel.panic = 0\n")
    code, out = hostguard(root, "check")
    assert code == 1
    assert f"{later} sets kernel.panic = 0" in out
    # The drop-in edited by hand.
    later.unlink()
    dropin = root / sysctls.DROPIN
    dropin.write_text(dropin.read_text().replace("kernel.panic = 5", "kernel.panic = 7"))
    code, out = hostguard(root, "check")
    assert code == 1 and "drop-in differs" in out


def _advice(out: str) -> list[str]:
    """The lines after the table's `drift in N of M settings`."""
    lines = out.splitlines()
    return lines[next(i for i, x in enumerate(lines) if x.startswith("drift in")) + 1:]


def test_check_names_the_file_that_overrides_and_install_does_not_claim_to_fix_it(
        tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    assert hostguard(root, "install")[0] == 0
    # Another directory, a later name: sysctl.d sorts names across directories, so it wins.
    vendor = root / "usr/lib/sysctl.d/99-vendor.conf"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("kernel.hung_task_panic = 0\n")
    code, out = hostguard(root, "check")
    assert code == 1, out
    assert "install` fixes" not in out, out
    assert _advice(out) == [
        f"{vendor} sets kernel.hung_task_panic = 0, and sysctl applies it after "
        f"{root / sysctls.DROPIN} (files apply in the order of their names, the last one "
        "wins): change or remove that line there; `failberry hostguard install` does not "
        "touch other files"]
    line = next(x for x in out.splitlines() if x.startswith("kernel.hung_task_panic"))
    assert f"overridden by {vendor}" in line
    # install says so too, and cannot change it.
    code, out = hostguard(root, "install")
    assert code == 0
    assert f"note: {vendor} sets kernel.hung_task_panic = 0 after our drop-in" in out
    assert hostguard(root, "check")[0] == 1
    # What install does fix is still offered, for those settings only, and only until boot
    # where an override is in the way.
    (root / "proc/sys/kernel/hung_task_panic").write_text("0\n")
    (root / "proc/sys/kernel/panic").write_text("0\n")
    code, out = hostguard(root, "check")
    assert code == 1
    assert _advice(out)[1:] == ["`failberry hostguard install` fixes kernel.panic; it sets "
                                "kernel.hung_task_panic only until the next boot"]
    # /etc/sysctl.conf comes after every sysctl.d file, whatever its name.
    vendor.unlink()
    assert hostguard(root, "install")[0] == 0
    legacy = root / "etc/sysctl.conf"
    legacy.write_text("kernel.panic=1\n")
    code, out = hostguard(root, "check")
    assert code == 1 and _advice(out)[0].startswith(f"{legacy} sets kernel.panic = 1,"), out
    # ... and so does Debian's link to it, 99-sysctl.conf.
    link = root / "etc/sysctl.d/99-sysctl.conf"
    link.symlink_to("../sysctl.conf")
    code, out = hostguard(root, "check")
    assert code == 1
    assert _advice(out)[0].startswith(f"{link} (a link to {legacy}) sets kernel.panic = 1,")


def test_sysctl_d_precedence(tmp_path: Path) -> None:
    """sysctl.d(5): /etc, /run, /usr/local/lib, /usr/lib, /lib, highest first; a name in a
    higher directory masks the same name in a lower one; names apply in lexical order."""
    root = fake_root(tmp_path)
    assert hostguard(root, "install")[0] == 0

    def conf(path: str, text: str) -> Path:
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        return f

    # An earlier name never overrides ours, wherever it lives.
    conf("etc/sysctl.d/10-early.conf", "kernel.panic = 0\n")
    conf("run/sysctl.d/50-early.conf", "kernel.panic = 0\n")
    assert hostguard(root, "check")[0] == 0
    # /usr/lib masks /lib, /usr/local/lib masks /usr/lib, /run masks /usr/local/lib, /etc masks
    # /run: each time the higher directory's harmless copy hides a lower one that would win.
    dirs = ["lib", "usr/lib", "usr/local/lib", "run", "etc"]
    for low, high in itertools.pairwise(dirs):
        bad = conf(f"{low}/sysctl.d/95-x.conf", "kernel.panic = 0\n")
        code, out = hostguard(root, "check")
        assert code == 1 and f"{bad} sets kernel.panic = 0" in out, (low, out)
        conf(f"{high}/sysctl.d/95-x.conf", "kernel.panic = 5\n")
        code, out = hostguard(root, "check")
        assert code == 0, (low, high, out)
        bad.unlink()
        (root / f"{high}/sysctl.d/95-x.conf").unlink()
    # A link to /dev/null in /etc masks a vendor file (systemd's convention).
    conf("usr/lib/sysctl.d/95-x.conf", "kernel.panic = 0\n")
    (root / "etc/sysctl.d/95-x.conf").symlink_to("/dev/null")
    assert hostguard(root, "check")[0] == 0


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    code, out = hostguard(root, "install", "--dry-run")
    assert code == 0
    assert "would set kernel.hung_task_panic: 0 -> 1 (live)" in out
    assert live(root)["hung_task_panic"] == "0"
    assert not (root / "etc").exists() and not (root / "var").exists()


def test_files_only_without_a_fake_procfs(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    code, out = hostguard(root, "install")
    assert code == 0, out
    assert "writing files only" in out
    assert (root / sysctls.DROPIN).is_file()
    assert not (root / sysctls.STATE).exists()
    code, out = hostguard(root, "check")
    assert code == 0, out
    # check writes nothing: its note must not say it does
    assert "checking files only" in out and "writing" not in out
    assert hostguard(root, "uninstall")[0] == 0
    assert not (root / sysctls.DROPIN).exists()


def test_foreign_files_are_left_alone(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    dropin = root / sysctls.DROPIN
    dropin.parent.mkdir(parents=True)
    dropin.write_text("kernel.panic = 30\n")
    code, out = hostguard(root, "install")
    assert code == 1
    assert "not written by failberry" in out and "Traceback" not in out
    assert dropin.read_text() == "kernel.panic = 30\n"
    assert live(root)["panic"] == "0"
    code, out = hostguard(root, "uninstall")
    assert code == 1
    assert dropin.exists()


def test_bad_config_exits_2(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[hostguard]\nthreshold = "1s"\nprobe_interval = "2s"\n')
    code, out = hostguard(root, "check", "-c", str(cfg))
    assert code == 2
    assert "hostguard.threshold" in out and "Traceback" not in out
    cfg.write_text("[hostgaurd]\npanic = 1\n")
    code, out = hostguard(root, "install", "-c", str(cfg))
    assert code == 2 and "hostgaurd" in out
    assert live(root)["hung_task_panic"] == "0"


def test_router_config_is_accepted_for_its_hostguard_table(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    cfg = tmp_path / "failberry.toml"
    cfg.write_text('[modem]\napn = "internet"\n[hostguard]\npanic = 9\n')
    assert hostguard(root, "install", "-c", str(cfg))[0] == 0
    assert live(root)["panic"] == "9"


class _OldKernel(sysctls.ProcSys):
    """A fake kernel that, like those before the count, takes only 0 or 1 for hung_task_panic."""

    def write(self, key: str, value: str) -> None:
        if key == "kernel.hung_task_panic" and value not in ("0", "1"):
            raise sysctls.SysctlError(f"cannot set {key} = {value}: Invalid argument")
        super().write(key, value)


def test_a_count_the_kernel_refuses_leaves_everything_as_it_was(tmp_path: Path) -> None:
    root = fake_root(tmp_path, panic="0", timeout="480")
    proc = _OldKernel(root / "proc/sys")
    with pytest.raises(sysctls.SysctlError, match="hung_task_panic"):
        sysctls.install(HostguardConfig(hung_task_panic=3), root, proc)
    assert live(root) == {"hung_task_panic": "0", "hung_task_timeout_secs": "480", "panic": "0"}
    assert not (root / sysctls.DROPIN).exists()
    changes = sysctls.install(HostguardConfig(hung_task_panic=3), root,
                              sysctls.ProcSys(root / "proc/sys"))
    assert any("hung_task_panic: 0 -> 3" in c.what for c in changes)
    assert "kernel.hung_task_panic = 3" in (root / sysctls.DROPIN).read_text()


def test_a_mounted_procfs_is_never_a_test_tree(tmp_path: Path) -> None:
    assert sysctls.live_procsys(Path("/")) is None
    assert sysctls.live_procsys(tmp_path) is None  # no proc/sys under it
    tree = fake_root(tmp_path)
    proc = sysctls.live_procsys(tree)
    assert proc is not None and proc.base == tree / "proc/sys"


def test_nvme_advice(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    assert nvme.check(root) is None
    param = root / nvme.PARAM
    param.parent.mkdir(parents=True)
    param.write_text("30\n")
    (root / "proc/cmdline").write_text("root=/dev/nvme0n1p1 ro\n")
    advice = nvme.check(root)
    assert advice is not None and advice.running == 30
    assert "nvme_core.io_timeout=4294967295" in advice.advice
    code, out = hostguard(root, "install")
    assert code == 0 and "nvme_core.io_timeout=4294967295" in out
    param.write_text("4294967295\n")
    advice = nvme.check(root)
    assert advice is not None and advice.advice == ""


def test_sysctl_conf_parsing() -> None:
    text = "# c\n; c\n-kernel.panic = 3\nkernel/hung_task_panic=1\nnot a line\n"
    assert list(sysctls.parse_sysctl_conf(text)) == [("kernel.panic", "3"),
                                                     ("kernel.hung_task_panic", "1")]


def test_a_root_that_is_not_a_directory_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`--root` naming a file, or a directory that does not exist: bad input, exit 2."""
    afile = tmp_path / "f"
    afile.write_text("")
    for root in (afile, tmp_path / "missing"):
        for action in ("install", "uninstall", "check"):
            proc = run_cli(["hostguard", action, "--root", str(root)])
            assert proc.returncode == 2, (action, root, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert proc.stderr.strip().splitlines() == [
                f"failberry: error: --root: {root} is not a directory"]
    assert not (tmp_path / "missing").exists()  # nothing made on the way


def test_a_file_we_cannot_write_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """sysctl.d not writable (a read-only /etc, or `etc/sysctl.d` a file): exit 1, one line
    naming the path."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "sysctl.d").write_text("")  # in the way of the drop-in's directory
    proc = run_cli(["hostguard", "install", "--root", str(tmp_path)])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "sysctl.d" in errors[0], proc.stderr


def test_watch_refuses_to_watch_nothing(tmp_path: Path) -> None:
    """`mounts = []`, or a mount point that does not exist (a typo such as "/vra/lib"): the
    watcher ran for good, probing nothing useful ("watching : ...", a PROBE-ERROR once) and so
    never able to see a hang. Bad input: one line, exit 2, before anything starts."""
    cfg = tmp_path / "hg.toml"
    for mounts, message in (
            ("[]", "hostguard.mounts: empty; name at least one mount point to watch"),
            (f'["/", "{tmp_path}/vra/lib"]',
             f"hostguard.mounts: {tmp_path}/vra/lib is not a directory")):
        cfg.write_text(f"[hostguard]\nmounts = {mounts}\n")
        proc = run_cli(["hostguard", "watch", "-c", str(cfg), "--dry-run"], timeout=20)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"failberry: error: {message}"]
