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
