"""The command line: exit codes, one-line errors, no tracebacks for user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from failberry import __version__


def test_version() -> None:
    proc = run_cli(["--version"])
    assert proc.returncode == 0
    assert __version__ in proc.stdout


def test_bad_arguments_exit_2_in_one_line() -> None:
    proc = run_cli(["frobnicate"])
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_subcommand_exit_2() -> None:
    proc = run_cli(["config"])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_hostguard_does_not_import_router_libraries() -> None:
    """`pip install failberry` on a server must work without pyroute2 and friends."""
    code = ("import sys, failberry.cli as c; p = c.build_parser(); "
            "import failberry.hostguard.commands, failberry.config; "
            "bad = [m for m in ('pyroute2','iptc','serial','usb','pyudev','dns','requests') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_boot_test_rejects_a_time_that_is_not_positive_before_booting(tmp_path: Path) -> None:
    """`--timeout -5` or `--hang-kernel 0` would boot QEMU for minutes and then fail at once:
    bad input, said in one line before anything starts."""
    image = tmp_path / "x.img"
    image.write_bytes(b"")  # never read: the arguments are refused first
    for args in (["--timeout", "-5"], ["--timeout", "0"], ["--timeout", "nan"],
                 ["--timeout", "inf"], ["--hang-kernel", "-3"], ["--hang-kernel", "0"]):
        proc = run_cli(["boot-test", *args, str(image)])
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert args[0] in proc.stderr and "MBR" not in proc.stderr


@pytest.mark.root
def test_net_clean_refuses_while_the_supervisor_runs(tmp_path: Path) -> None:
    """`failberry net clean` with failberryd running removed everything, and the supervisor
    put it all back 5 s later (and the saved sysctls were gone): it says so and changes
    nothing. A stale supervisor.json (the pid is gone, or is not failberry) does not stop it."""
    import json
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = run_dir / "sysctl-saved.json"
    saved.write_text('{"net/ipv4/ip_forward": "0"}')
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "failberry", "run"])
    try:
        (run_dir / "supervisor.json").write_text(json.dumps(
            {"pid": fake.pid, "config": "/etc/failberry/failberry.toml",
             "url": "http://127.0.0.1:9000/status"}))
        # In a network namespace of its own: if it did clean, it cleans nothing of the host's.
        proc = subprocess.run(["unshare", "--net", sys.executable, "-m", "failberry", "net",
                               "clean", "--state-dir", str(run_dir)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"failberry: error: the supervisor is running (pid {fake.pid}) and would put it "
            "all back; stop it first: systemctl stop failberryd"]
        assert proc.stdout == "" and saved.exists()
    finally:
        fake.kill()
        fake.wait()
    from failberry.runfile import RunFile

    assert RunFile(run_dir).running_pid() is None  # gone: net clean goes ahead
    (run_dir / "supervisor.json").write_text(json.dumps({"pid": 1, "config": None, "url": ""}))
    assert RunFile(run_dir).running_pid() is None  # pid 1 is not failberry


def test_secrets_in_a_world_readable_config_are_warned_about(tmp_path: Path) -> None:
    """A hand-edited config with the SIM PIN inline is often 0644: any local user reads the
    PIN. `config check` says which file, which keys and how to fix it (still exit 0), never
    the secret; a `*_file` that others can read is named the same way; 0600 is quiet."""
    cfg = tmp_path / "failberry.toml"
    key = tmp_path / "tsig.key"
    key.write_text("c2VrcmV0c2VrcmV0c2VrcmV0\n")
    cfg.write_text('[modem]\napn = "internet"\npin = "4321"\n[dyndns]\nprovider = "rfc2136"\n'
                   'name = "pi.example.org"\n[dyndns.rfc2136]\nserver = "192.0.2.53"\n'
                   'zone = "example.org"\ntsig_key_name = "k"\n'
                   'tsig_secret_file = "tsig.key"\n')
    cfg.chmod(0o644)
    key.chmod(0o644)
    proc = run_cli(["config", "check", "-c", str(cfg)])
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert warnings == [
        f"failberry: warning: {cfg} holds secrets (modem.pin) and every user can read it "
        f"(mode 0644); chmod 600 {cfg}",
        f"failberry: warning: {key} holds secrets (dyndns.rfc2136.tsig_secret_file) and every "
        f"user can read it (mode 0644); chmod 600 {key}"]
    assert "4321" not in proc.stdout + proc.stderr and "c2Vr" not in proc.stdout + proc.stderr
    cfg.chmod(0o600)
    key.chmod(0o640)
    proc = run_cli(["config", "check", "-c", str(cfg)])
    assert proc.returncode == 0 and "warning" not in proc.stderr


def test_a_world_readable_config_with_a_webhook_url_is_warned_about(tmp_path: Path) -> None:
    # A Slack hook URL or an ntfy topic is all it takes to post (or read) the alerts.
    cfg = tmp_path / "failberry.toml"
    hook = "https://hooks.slack.com/services/T0/B0/abcdefsecret"
    cfg.write_text(f'[modem]\napn = "internet"\n[alerts]\nwebhooks = ["slack {hook}"]\n')
    cfg.chmod(0o644)
    proc = run_cli(["config", "check", "-c", str(cfg)])
    assert proc.returncode == 0, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if "warning" in ln] == [
        f"failberry: warning: {cfg} holds secrets (alerts.webhooks) and every user can read it "
        f"(mode 0644); chmod 600 {cfg}"]
    assert "abcdefsecret" not in proc.stdout + proc.stderr
    cfg.chmod(0o600)
    assert "warning" not in run_cli(["config", "check", "-c", str(cfg)]).stderr
