"""`[[forward]]`: a list of tables, each entry checked like every other key; a bad value
exits 2 naming its key path (`forward[N].key`, N counting the entries from 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from failberry import cli, config
from failberry.config_render import dump_toml, summary

BASE = '[modem]\napn = "internet"\n'
GOOD = '[[forward]]\nprotocol = "udp"\nport = 1194\nto = "192.168.1.10"\n'
GATEWAY = '[failover]\nmode = "gateway"\n[uplink.wired]\ninterface = "eth1"\n'


def fw(**kv: str) -> str:
    """One [[forward]] entry: the good one with these raw TOML values (an empty one drops the
    key)."""
    keys = {"protocol": '"tcp"', "port": "443", "to": '"192.168.1.10"', **kv}
    return "[[forward]]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v)


BAD = [
    ("protocol", fw(protocol='"icmp"'), "forward[1].protocol"),
    ("protocol-type", fw(protocol="6"), "forward[1].protocol"),
    ("protocol-missing", fw(protocol=""), "forward[1].protocol"),
    ("port-zero", fw(port="0"), "forward[1].port"),
    ("port-high", fw(port="65536"), "forward[1].port"),
    ("port-text", fw(port='"https"'), "forward[1].port"),
    ("port-bool", fw(port="true"), "forward[1].port"),
    ("port-list", fw(port="[443]"), "forward[1].port"),
    ("port-missing", fw(port=""), "forward[1].port"),
    ("range-backwards", fw(port='"60010-60000"'), "forward[1].port"),
    ("range-open", fw(port='"60000-"'), "forward[1].port"),
    ("range-high", fw(port='"65000-70000"'), "forward[1].port"),
    ("to-outside-lan", fw(to='"192.168.2.10"'), "forward[1].to"),
    ("to-not-address", fw(to='"nas.lan"'), "forward[1].to"),
    ("to-network", fw(to='"192.168.1.0"'), "forward[1].to"),
    ("to-broadcast", fw(to='"192.168.1.255"'), "forward[1].to"),
    ("to-pi-itself", fw(to='"192.168.1.2"'), "forward[1].to"),
    ("to-missing", fw(to=""), "forward[1].to"),
    ("to-port-zero", fw(to_port="0"), "forward[1].to_port"),
    ("to-port-size", fw(port='"60000-60010"', to_port='"7000-7001"'), "forward[1].to_port"),
    ("to-port-huge-move", fw(port='"10000-10300"', to_port='"20000-20300"'),
     "forward[1].to_port"),
    ("uplinks-name", fw(uplinks='["lte"]'), "forward[1].uplinks"),
    ("uplinks-type", fw(uplinks='"mobile"'), "forward[1].uplinks"),
    ("uplinks-wired-sidecar", fw(uplinks='["wired"]'), "forward[1].uplinks"),
    ("unknown-key", fw(dest='"x"'), "forward[1].dest"),
    ("health-port", fw(port="9000"), "forward[1].port"),
    ("health-port-range", fw(port='"8990-9010"'), "forward[1].port"),
    ("overlap", GOOD + fw(protocol='"udp"', port='"1190-1200"'), "forward[2].port"),
    ("not-a-list", 'forward = "udp/1194"\n', "forward"),
    ("item-not-table", "forward = [1]\n", "forward[1]"),
    ("second-entry", GOOD + fw(to='"10.0.0.1"'), "forward[2].to"),
]


@pytest.mark.parametrize("name,text,path", BAD, ids=[b[0] for b in BAD])
def test_bad_forward_is_refused(name: str, text: str, path: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "failberry.toml"
    cfg_file.write_text(text + BASE)  # top-level keys go before any table
    code = cli.main(["config", "check", "-c", str(cfg_file)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert f": {path}:" in err, err
    assert "Traceback" not in out + err


def test_bad_forward_exits_2_from_the_command_line(tmp_path: Path) -> None:
    f = tmp_path / "failberry.toml"
    f.write_text(BASE + fw(port='"60010-60000"'))
    proc = run_cli(["config", "check", "-c", str(f)])
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{f}: forward[1].port: '60010-60000': the range ends "
                                   "before it starts")


def test_good_forwards_parse_and_round_trip() -> None:
    text = (BASE + GATEWAY + GOOD
            + fw(port='"60000-60010"', to_port='"7000-7010"', uplinks='["mobile"]')
            + fw(protocol='"tcp"', port="8443", to_port="443", uplinks='["wired", "mobile"]'))
    cfg = config.parse(text)
    assert [f.name for f in cfg.forward] == ["udp/1194", "tcp/60000-60010", "tcp/8443"]
    assert cfg.forward[0] == config.ForwardConfig("udp", "1194", "192.168.1.10", "", ())
    assert cfg.forward[1].to_port == "7000-7010" and cfg.forward[1].uplinks == ("mobile",)
    assert config.parse(dump_toml(cfg, reveal_secrets=False)) == cfg
    assert "forward:  udp/1194 -> 192.168.1.10:1194 on every uplink" in summary(cfg)
    # The same ports on different protocols or uplinks do not overlap.
    config.parse(BASE + GATEWAY + fw(protocol='"udp"', port="1194", uplinks='["mobile"]')
                 + fw(protocol='"tcp"', port="1194")
                 + fw(protocol='"udp"', port="1194", to='"192.168.1.11"', uplinks='["wired"]'))


def test_no_forwards_is_the_default() -> None:
    assert config.parse(BASE).forward == ()
