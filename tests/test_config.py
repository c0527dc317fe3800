"""The config model: examples accepted, bad configs refused with every error, key paths, no
tracebacks, and secrets never echoed."""

from __future__ import annotations

import base64
import dataclasses
import tomllib
from pathlib import Path

import pytest

from conftest import EXAMPLES, SSH_KEY, run_cli
from failberry import cli, config
from failberry.config_render import dump_toml
from failberry.errors import ConfigError
from failberry.schema import Duration, converter, toml_key
from failberry.units import parse_duration

MINIMAL = '[modem]\napn = "internet"\n'
SECRET_PIN = "4711"
SECRET_TSIG = base64.b64encode(b"very-secret-tsig-key-material!!").decode()
SECRET_PW = "hunter2-ZZ-secret"
# A base64 blob whose embedded key type says ssh-rsa while the line says ssh-ed25519.
MISMATCHED_KEY = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"\x00" * 8
                                                  ).decode()

BAD: list[tuple[str, str, str]] = [
    # (id, toml text, key path that must appear)
    ("syntax", '[modem\napn = "x"\n', "line 1"),
    ("unknown-top", MINIMAL + '[bogus]\nx = 1\n', "bogus"),
    ("unknown-in-section", MINIMAL + '[lan]\ninterfce = "eth0"\n', "lan.interfce"),
    ("unknown-nested", MINIMAL + '[uplink.wired]\nintervall = "1s"\n', "uplink.wired.intervall"),
    ("apn-missing", '[lan]\ninterface = "eth0"\n', "modem.apn"),
    ("apn-empty", '[modem]\napn = ""\n', "modem.apn"),
    ("apn-bad-chars", '[modem]\napn = "inter net\'; rm"\n', "modem.apn"),
    ("apn-type", '[modem]\napn = 5\n', "modem.apn"),
    ("pin-letters", MINIMAL.replace('"internet"', '"internet"\npin = "12ab"'), "modem.pin"),
    ("pin-short", MINIMAL.replace('"internet"', '"internet"\npin = "12"'), "modem.pin"),
    ("dial", MINIMAL.replace('"internet"', '"internet"\ndial = "ATD*99#"'), "modem.dial"),
    ("init-not-at", MINIMAL.replace('"internet"', '"internet"\ninit = ["CFUN=1"]'),
     "modem.init"),
    ("board", MINIMAL + '[image]\nboard = "rpi5"\n', "image.board"),
    ("hostname", MINIMAL + '[image]\nhostname = "-bad-"\n', "image.hostname"),
    ("hostname-underscore", MINIMAL + '[image]\nhostname = "my_pi"\n', "image.hostname"),
    ("size", MINIMAL + '[image]\nsize = "2 potatoes"\n', "image.size"),
    ("size-too-small", MINIMAL + '[image]\nsize = "100MiB"\n', "image.size"),
    ("extra-packages-type", MINIMAL + '[image]\nextra_packages = "vim"\n',
     "image.extra_packages"),
    ("iface-long", MINIMAL + '[lan]\ninterface = "averyveryverylongname0"\n', "lan.interface"),
    ("iface-slash", MINIMAL + '[lan]\ninterface = "eth/0"\n', "lan.interface"),
    ("cidr-no-prefix", MINIMAL + '[lan]\naddress = "192.168.1.2"\n', "lan.address"),
    ("cidr-garbage", MINIMAL + '[lan]\naddress = "192.168.1.300/24"\n', "lan.address"),
    ("cidr-network", MINIMAL + '[lan]\naddress = "192.168.1.0/24"\n', "lan.address"),
    ("gateway-outside", MINIMAL + '[lan]\naddress = "192.168.1.2/24"\ngateway = "10.0.0.1"\n',
     "lan.gateway"),
    ("port-range", MINIMAL + '[health]\nport = 70000\n', "health.port"),
    ("port-type", MINIMAL + '[health]\nport = "9000"\n', "health.port"),
    ("fw-port", MINIMAL + '[firewall]\nallow_tcp = [0]\n', "firewall.allow_tcp"),
    ("duration", MINIMAL + '[uplink.wired]\nprobe_interval = "fast"\n',
     "uplink.wired.probe_interval"),
    ("duration-unit", MINIMAL + '[uplink.mobile]\nprobe_interval = "10 parsecs"\n',
     "uplink.mobile.probe_interval"),
    ("down-zero", MINIMAL + '[uplink.wired]\ndown = 0\n', "uplink.wired.down"),
    ("loss-range", MINIMAL + '[failover]\nloss_threshold = 150\n', "failover.loss_threshold"),
    ("mode", MINIMAL + '[failover]\nmode = "router"\n', "failover.mode"),
    ("gateway-needs-wired", MINIMAL + '[failover]\nmode = "gateway"\n',
     "uplink.wired.interface"),
    ("cap", MINIMAL + '[failover]\ndata_cap = "lots"\n', "failover.data_cap"),
    ("device-mac", MINIMAL + '[failover]\nallowed_devices = ["zz:11:22:33:44:55"]\n',
     "failover.allowed_devices"),
    ("probe-target", MINIMAL + '[uplink.mobile]\nprobe_targets = ["ping 1.1.1.1"]\n',
     "uplink.mobile.probe_targets"),
    # probes go over IPv4: an IPv6 target would fail every round and hold the uplink down
    ("probe-target-ipv6", MINIMAL + '[uplink.mobile]\nprobe_targets = ["icmp:2606:4700::1111"]\n',
     "uplink.mobile.probe_targets"),
    ("probe-target-ipv6-tcp",
     MINIMAL + '[uplink.mobile]\nprobe_targets = ["tcp:[2606:4700::1111]:443"]\n',
     "uplink.mobile.probe_targets"),
    ("ssh-type", MINIMAL + '[admin]\nssh_authorized_keys = ["ssh-foo AAAA"]\n',
     "admin.ssh_authorized_keys"),
    ("ssh-base64", MINIMAL + '[admin]\nssh_authorized_keys = ["ssh-ed25519 !!!notbase64"]\n',
     "admin.ssh_authorized_keys"),
    ("ssh-mismatch", MINIMAL + f'[admin]\nssh_authorized_keys = ["{MISMATCHED_KEY}"]\n',
     "admin.ssh_authorized_keys"),
    ("ssh-dsa", MINIMAL + '[admin]\nssh_authorized_keys = ["ssh-dss AAAAB3NzaC1kc3M="]\n',
     "admin.ssh_authorized_keys"),
    ("user-root", MINIMAL + '[admin]\nuser = "root"\n', "admin.user"),
    ("timezone", MINIMAL + '[admin]\ntimezone = "Mars/Olympus"\n', "admin.timezone"),
    ("timezone-dir", MINIMAL + '[admin]\ntimezone = "Europe"\n', "admin.timezone"),
    ("timezone-posix", MINIMAL + '[admin]\ntimezone = "posix/Europe/Berlin"\n',
     "admin.timezone"),
    ("timezone-not-tzif", MINIMAL + '[admin]\ntimezone = "leapseconds"\n', "admin.timezone"),
    ("password-plain", MINIMAL + f'[admin]\npassword_hash = "{SECRET_PW}"\n',
     "admin.password_hash"),
    ("dns-provider", MINIMAL + '[dyndns]\nprovider = "godaddy"\n', "dyndns.provider"),
    ("rfc2136-missing", MINIMAL + '[dyndns]\nprovider = "rfc2136"\nname = "vpn.example.org"\n',
     "dyndns.rfc2136.server"),
    ("tsig-not-base64", MINIMAL + '[dyndns]\nprovider = "rfc2136"\nname = "vpn.example.org"\n'
     '[dyndns.rfc2136]\nserver = "127.0.0.1"\nzone = "example.org"\ntsig_key_name = "k"\n'
     f'tsig_secret = "{SECRET_PW}"\n', "dyndns.rfc2136.tsig_secret"),
    ("secret-both", MINIMAL + '[dyndns.dyndns2]\npassword = "x"\npassword_file = "/etc/x"\n',
     "dyndns.dyndns2.password"),
    ("secret-file-missing", MINIMAL + '[dyndns.dyndns2]\npassword_file = "/nonexistent/pw"\n',
     "dyndns.dyndns2.password_file"),
    ("section-not-table", MINIMAL + 'lan = "eth0"\n', "lan"),
    ("hostguard-mount", MINIMAL + '[hostguard]\nmounts = ["data"]\n', "hostguard.mounts"),
    ("syslog-target", MINIMAL + '[hostguard]\nsyslog_target = "logs.example.org"\n',
     "hostguard.syslog_target"),
]


@pytest.mark.parametrize("name,text,path", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused(name: str, text: str, path: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "failberry.toml"
    cfg_file.write_text(text)
    code = cli.main(["config", "check", "-c", str(cfg_file)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert path in err, err
    assert str(cfg_file) in err
    assert "Traceback" not in out + err
    for secret in (SECRET_PW, SECRET_TSIG):
        assert secret not in out + err


def test_at_least_25_distinct_bad_configs() -> None:
    assert len({b[1] for b in BAD}) >= 25


def test_every_error_is_reported_together(tmp_path: Path) -> None:
    text = ('[modem]\napn = ""\npin = "x"\n[lan]\ninterface = "eth/0"\n[health]\nport = 0\n'
            '[wat]\n')
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "f.toml")
    paths = {i.path for i in exc.value.issues}
    assert {"modem.apn", "modem.pin", "lan.interface", "health.port", "wat"} <= paths
    assert all(line.startswith("f.toml: ") for line in exc.value.lines())


def test_secret_never_printed_on_success(tmp_path: Path) -> None:
    tsig = tmp_path / "tsig.key"
    tsig.write_text(SECRET_TSIG + "\n")
    text = (f'[modem]\napn = "internet"\npin = "{SECRET_PIN}"\n'
            '[dyndns]\nprovider = "rfc2136"\nname = "vpn.example.org"\n'
            '[dyndns.rfc2136]\nserver = "127.0.0.1"\nzone = "example.org"\n'
            'tsig_key_name = "failberry"\ntsig_secret_file = "tsig.key"\n')
    (tmp_path / "f.toml").write_text(text)
    proc = run_cli(["config", "check", "-c", str(tmp_path / "f.toml")])
    assert proc.returncode == 0, proc.stderr
    assert SECRET_TSIG not in proc.stdout + proc.stderr
    assert SECRET_PIN not in proc.stdout + proc.stderr
    cfg = config.load(tmp_path / "f.toml")
    assert cfg.dyndns.rfc2136.tsig_secret is not None
    assert cfg.dyndns.rfc2136.tsig_secret.reveal() == SECRET_TSIG  # read relative to the file
    assert SECRET_TSIG not in repr(cfg) and SECRET_PIN not in repr(cfg)
    assert SECRET_PIN not in str(cfg.modem)


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "f.toml"
    f.write_text('[modem]\napn = "internet"\npin = 12 34\n')
    proc = run_cli(["config", "check", "-c", str(f)])
    assert proc.returncode == 2
    assert "line 3" in proc.stderr and "column" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(["config", "check", "-c", str(tmp_path / "nope.toml")])
    assert proc.returncode == 2
    assert "nope.toml: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["failberry.toml", "minimal.toml"])
def test_examples_accepted(name: str) -> None:
    proc = run_cli(["config", "check", "-c", str(EXAMPLES / name)])
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_full_example_spells_every_key() -> None:
    """examples/failberry.toml documents every key: it parses to exactly the defaults plus the
    APN, and dumping the defaults yields no key the example lacks."""
    text = (EXAMPLES / "failberry.toml").read_text()
    cfg = config.parse(text)
    assert cfg == dataclasses.replace(config.Config(),
                                      modem=config.ModemConfig(apn="internet"))
    import tomllib

    def keys(d: dict[str, object], prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    dumped = keys(tomllib.loads(dump_toml(cfg, reveal_secrets=False)))
    documented = keys(tomllib.loads(text))
    # Secrets are commented out in the example (no default); everything else must be there.
    assert dumped - documented == set(), dumped - documented


def test_defaults_make_a_minimal_file_enough() -> None:
    cfg = config.parse(MINIMAL)
    assert cfg.health.port == 9000 and cfg.health.listen == "0.0.0.0"
    assert cfg.uplink.wired.probe_interval == 0.5 and cfg.uplink.wired.down == 3
    assert cfg.image.board is config.Board.RPI3 and cfg.image.board.arch == "arm64"
    assert config.Board.RPI2.arch == "armhf"


def test_dump_round_trips_with_secrets(tmp_path: Path) -> None:
    text = (f'[modem]\napn = "web.example"\npin = "{SECRET_PIN}"\ninit = ["AT+CGDCONT=1,\\"IP\\",'
            f'\\"web\\""]\n[admin]\nssh_authorized_keys = ["{SSH_KEY}"]\n'
            '[failover]\nmode = "gateway"\ndata_cap = "10GiB"\nhold_down = "1500ms"\n'
            '[uplink.wired]\ninterface = "eth1"\naddress = "203.0.113.2/24"\n'
            'gateway = "203.0.113.1"\n[dyndns]\nprovider = "dyndns2"\nname = "a.example.org"\n'
            f'[dyndns.dyndns2]\nurl = "https://x.example/nic/update"\nusername = "u"\n'
            f'password = "{SECRET_PW}"\n')
    cfg = config.parse(text)
    again = config.parse(dump_toml(cfg, reveal_secrets=True))
    assert again == cfg
    masked = dump_toml(cfg, reveal_secrets=False)
    assert SECRET_PIN not in masked and SECRET_PW not in masked


def _duration_keys(cls: type, prefix: str) -> list[str]:
    """Dotted TOML paths of every field whose schema converter is a Duration."""
    out: list[str] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{toml_key(f.name)}".lstrip(".")
        if f.metadata.get("section"):
            out += _duration_keys(f.default_factory, key)  # type: ignore[arg-type, misc]
        elif isinstance(converter(f), Duration):
            out.append(key)
    return out


def test_dump_writes_every_duration_as_text() -> None:
    """Every duration field is written "2s"-style, not as a bare float (`retry_initial = 2.0`
    was written when the renderer kept its own list of duration names)."""
    keys = _duration_keys(config.Config, "")
    for must in ("dyndns.retry_initial", "dyndns.retry_max", "pihealth.interval",
                 "pihealth.alert_interval", "failover.hold_down"):
        assert must in keys
    cfg = config.parse(MINIMAL)
    doc = tomllib.loads(dump_toml(cfg, reveal_secrets=False))
    for key in keys:
        value: object = doc
        for part in key.split("."):
            assert isinstance(value, dict)
            value = value[part]
        assert isinstance(value, str), f"{key} = {value!r}"
        assert parse_duration(value) == _get(cfg, key), key
    assert config.parse(dump_toml(cfg, reveal_secrets=False)) == cfg


def _get(cfg: object, key: str) -> object:
    for part in key.split("."):
        cfg = getattr(cfg, part.replace("-", "_"))
    return cfg


@pytest.mark.parametrize("value,seconds", [("500ms", 0.5), ("10s", 10), ("5m", 300),
                                            ("1h", 3600), (3, 3.0), (0.25, 0.25)])
def test_durations(value: object, seconds: float) -> None:
    from failberry.units import format_duration, parse_duration

    assert parse_duration(value) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("value,size", [("2GiB", 2 << 30), ("500MB", 500_000_000), ("0", 0),
                                         (1024, 1024), ("1.5KiB", 1536)])
def test_sizes(value: object, size: int) -> None:
    from failberry.units import format_size, parse_size

    assert parse_size(value) == size
    assert parse_size(format_size(size)) == size


def test_time_zones_are_the_ones_zoneinfo_lists() -> None:
    # Checked by the zone's own file (listing them all took seconds at a Pi's boot): the same
    # names zoneinfo.available_timezones gives are accepted.
    import zoneinfo

    from failberry import checks

    for name in sorted(zoneinfo.available_timezones()):
        assert checks.timezone(name) == name
