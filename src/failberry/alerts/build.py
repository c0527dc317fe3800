"""The alerts part with real seams, from the config: channels, the SMS port, the reboot."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from failberry.alerts.at_session import AtSession, AtSessionProvider, SerialSmsProvider
from failberry.alerts.channel import Channel
from failberry.alerts.hooks import HookChannel
from failberry.alerts.outbox import Policy
from failberry.alerts.part import AlertsPart, Clocks, Kept
from failberry.alerts.sms import SmsChannel, SmsModem
from failberry.alerts.spec import parse_quiet_hours, parse_webhook
from failberry.alerts.store import FILE_NAME
from failberry.alerts.webhook import HttpPost, WebhookChannel
from failberry.config import AlertsConfig, Config
from failberry.parts import Seams
from failberry.timegate import TimeGate

LOG = logging.getLogger(__name__)


class NoSmsPort:
    """Until the modem part hands over its monitoring AT port: no session, SMS stay queued."""

    def __init__(self) -> None:
        self._said = False

    async def acquire(self) -> AtSession | None:
        """None, said once in the log."""
        if not self._said:
            self._said = True
            LOG.warning("SMS alerts are queued: no AT port for them (set alerts.sms_port)")
        return None

    def on_urc(self, callback: Callable[[str], None]) -> None:
        """No port, no URCs."""


def policy(a: AlertsConfig, *, human: bool = True) -> Policy:
    """The outbox policy: people get quiet hours and retries; hook scripts run once, always."""
    return Policy(hold_down=a.hold_down, max_per_hour=a.max_per_hour,
                  quiet=parse_quiet_hours(a.quiet_hours) if human else None,
                  retry_initial=a.retry_initial, retry_max=a.retry_max,
                  retry_for=a.retry_for, retries=human)


def channels(cfg: Config, sms: SmsModem | None,
             http: HttpPost | None = None) -> list[Channel]:
    """Every channel the config asks for."""
    a = cfg.alerts
    out: list[Channel] = []
    if sms is not None:
        out += [SmsChannel(sms, n, policy(a)) for n in a.sms_to]
    seen: dict[str, int] = {}
    for raw in a.webhooks:
        hook = parse_webhook(raw)
        host = hook.host()
        seen[host] = seen.get(host, 0) + 1
        name = f"webhook:{host}" + (f"#{seen[host]}" if seen[host] > 1 else "")
        out.append(WebhookChannel(name, hook, policy(a), timeout=a.webhook_timeout, http=http))
    out.append(HookChannel(Path(a.hooks_dir), a.hook_timeout, policy(a, human=False)))
    return out


def run_reboot(argv: tuple[str, ...]) -> Callable[[str], None]:
    """The reboot seam: `recovery.reboot_command`."""
    def reboot(reason: str) -> None:
        LOG.warning("rebooting (%s): %s", reason, shlex.join(argv))
        subprocess.run(list(argv), check=False, timeout=60)
    return reboot


def build(cfg: Config, seams: Seams, *, provider: AtSessionProvider | None = None,
          http: HttpPost | None = None, reboot: Callable[[str], None] | None = None,
          clocks: Clocks | None = None, tick: float = 1.0,
          data_every: float = 30.0) -> AlertsPart:
    """The part; `provider` is the SMS port (`build_parts` hands in the modem part's)."""
    a = cfg.alerts
    sms = None
    if a.sms_to or a.sms_commands_from:
        if provider is None:
            from failberry.modem.at import open_serial

            provider = SerialSmsProvider(a.sms_port, open_serial) if a.sms_port else NoSmsPort()
        sms = SmsModem(provider)
    return AlertsPart(cfg, seams.status, seams.bus, channels(cfg, sms, http),
                      state_path=Path(cfg.paths.state_dir) / FILE_NAME, sms=sms,
                      reboot=reboot or run_reboot(cfg.recovery.reboot_command),
                      clocks=clocks, tick=tick, data_every=data_every,
                      kept=seams.kept if isinstance(seams.kept, Kept) else None,
                      time_gate=TimeGate())
