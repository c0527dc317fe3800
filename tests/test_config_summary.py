"""The `failberry config check` summary says what the config will do."""
from __future__ import annotations

from failberry import config
from failberry.config_render import summary

BASE = '[modem]\napn = "internet"\n'


def test_summary_says_the_modem_is_off_when_disabled() -> None:
    off = summary(config.parse(BASE + "enabled = false\n"))
    assert "modem:    off (modem.enabled = false): something else brings up ppp0" in off
    assert not any("APN" in line for line in off)
    on = summary(config.parse(BASE))
    assert "modem:    auto, APN internet, dial *99#, no PIN" in on


def test_summary_says_a_wired_uplink_is_ignored_in_sidecar_mode() -> None:
    wired = '[uplink.wired]\ninterface = "eth1"\n'
    side = summary(config.parse(BASE + wired))
    assert any(line.startswith("note:") and "'eth1' is ignored in sidecar mode" in line
               for line in side)
    gw = summary(config.parse(BASE + wired + '[failover]\nmode = "gateway"\n'))
    assert not any(line.startswith("note:") for line in gw)
    assert not any(line.startswith("note:") for line in summary(config.parse(BASE)))
