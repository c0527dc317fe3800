"""`failberry status [--json]`: ask the local supervisor for /status and show it on one screen."""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from failberry.errors import FailberryError, UsageError
from failberry.runfile import RunFile
from failberry.runfile import status_url as runfile_url
from failberry.units import human_size

TIMEOUT = 3.0


class SupervisorNotRunning(FailberryError):
    """Nothing answers at the status URL."""


class StatusUnavailable(FailberryError):
    """The supervisor answered, but not with a status document."""


def status_url(config_path: Path) -> str:
    """The local /status URL: where the supervisor running this config says it listens
    (`supervisor.json` in the config's `paths.run_dir`), else the config's health port
    (defaults without a readable config)."""
    from failberry import config

    # The config is 0600 (it holds secrets): an admin without sudo cannot read it, and
    # then the default run directory and port are the best guess; --url overrides it.
    if config_path.exists() and os.access(config_path, os.R_OK):
        cfg = config.load(config_path)
        host, port, run_dir = cfg.health.listen, cfg.health.port, cfg.paths.run_dir
    else:
        host, port = "127.0.0.1", config.HealthConfig().port
        run_dir = config.PathsConfig().run_dir
    return RunFile(Path(run_dir)).url_for(config_path) or runfile_url(host, port)


def fetch(url: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """GET the status document."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            raw = resp.read(4 * 1024 * 1024)
    except urllib.error.HTTPError as e:
        raise StatusUnavailable(f"{url} answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SupervisorNotRunning(
            f"the supervisor is not running: nothing answers at {url} ({reason}); "
            "start it with `systemctl start failberryd`") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise StatusUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(doc, dict):
        raise StatusUnavailable(f"{url} did not answer a JSON object")
    return doc


def _ago(when: Any, now: float) -> str:
    if not isinstance(when, int | float):
        return "never"
    secs = max(0.0, now - when)
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    if secs < 172800:
        return f"{secs / 3600:.1f}h ago"
    return f"{secs / 86400:.0f}d ago"


def _duration(secs: Any) -> str:
    if not isinstance(secs, int | float):
        return "?"
    s = int(secs)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    mins, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m {s}s"


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "?"
    return human_size(n)


def _uplink_line(name: str, u: Mapping[str, Any]) -> str:
    words = [f"  {name:<7}", "UP  " if u.get("up") else "DOWN"]
    if u.get("active"):
        words.append("(active)")
    if u.get("interface"):
        words.append(str(u["interface"]))
    if u.get("address"):
        words.append(str(u["address"]))
    if isinstance(u.get("latency_ms"), int | float):
        words.append(f"rtt {u['latency_ms']:.0f} ms")
    if isinstance(u.get("loss_pct"), int | float):
        words.append(f"loss {u['loss_pct']:.0f}%")
    if u.get("reason"):
        words.append(f"- {u['reason']}")
    return " ".join(words)


def _pihealth_lines(pi: Mapping[str, Any], now: float) -> list[str]:
    """The Pi's power, temperature and SD card; a field the board lacks is left out."""
    words: list[str] = []
    power = pi.get("power")
    if isinstance(power, Mapping):
        text = "UNDER-VOLTAGE NOW, " if power.get("undervoltage") else ""
        text += (f"under-voltage {power.get('events_total', 0)}x "
                 f"({_duration(power.get('seconds_total'))}) since boot, "
                 f"{power.get('events_last_hour', 0)}x in the last hour")
        if power.get("last_seen_at") is not None and not power.get("undervoltage"):
            text += f", last {_ago(power.get('last_seen_at'), now)}"
        words.append(text)
    temp = pi.get("temperature")
    if isinstance(temp, Mapping) and isinstance(temp.get("max_celsius"), int | float):
        words.append(f"{temp['max_celsius']:.0f} °C" + (" HOT" if temp.get("hot") else ""))
    storage = pi.get("storage")
    if isinstance(storage, Mapping):
        if storage.get("root_readonly"):
            words.append("ROOT READ-ONLY")
        elif storage.get("root_readonly") is False:
            words.append("root rw")
        if isinstance(storage.get("errors_total"), int):
            words.append(f"{storage['errors_total']} SD errors")
    if not words:
        return ["pi: no power or temperature sensors on this board"]
    lines = ["pi: " + ", ".join(words)]
    if isinstance(storage, Mapping) and storage.get("last_error"):
        lines.append(f"  last SD error {_ago(storage.get('last_error_at'), now)}: "
                     f"{storage['last_error']}")
    alerts = pi.get("alerts") or []
    if isinstance(alerts, list) and alerts and isinstance(alerts[-1], Mapping):
        last = alerts[-1]
        lines.append(f"  last warning {_ago(last.get('at'), now)}: {last.get('message', '')}")
    return lines


def _alerts_lines(alerts: Mapping[str, Any], now: float) -> list[str]:
    """Each alert channel's counts and trouble, the last alerts, the data forecast."""
    words = []
    channels = alerts.get("channels") or {}
    for name, c in channels.items() if isinstance(channels, Mapping) else ():
        if not isinstance(c, Mapping):
            continue
        text = f"{name} {c.get('sent', 0)} sent"
        for key in ("failed", "queued", "held"):
            if c.get(key):
                text += f" {c[key]} {key}"
        if c.get("waiting_for"):
            text += f" (waiting for {c['waiting_for']})"
        if c.get("last_error"):
            text += f" ({c['last_error']})"
        words.append(text)
    lines = ["alerts: " + ("; ".join(words) if words else "no channels")]
    recent = alerts.get("recent") or []
    for a in list(recent)[-3:] if isinstance(recent, list) else []:
        if isinstance(a, Mapping):
            lines.append(f"  {_ago(a.get('at'), now):>9}  {a.get('message', '')}")
    fc = alerts.get("forecast")
    if isinstance(fc, Mapping) and isinstance(fc.get("projected_bytes"), int | float):
        text = f"  data at the reset: about {_bytes(fc['projected_bytes'])}"
        if isinstance(fc.get("reach_at"), int | float):
            text += f", cap reached {time.strftime('%Y-%m-%d', time.localtime(fc['reach_at']))}"
        if alerts.get("health_check_bytes"):
            text += f" (health checks so far {_bytes(alerts['health_check_bytes'])})"
        lines.append(text)
    return lines


def _reboot_budget_lines(modem: Mapping[str, Any]) -> list[str]:
    """The reboot budget, when it matters: a reboot spent, or reboots off."""
    used, per_day = modem.get("reboots_last_day"), modem.get("reboots_per_day")
    if not isinstance(used, int) or not isinstance(per_day, int):
        return []
    if per_day == 0:
        return ["  reboots: never ([recovery] reboots_per_day = 0)"]
    if used == 0:
        return []
    if modem.get("reboot_budget_spent"):
        return [f"  reboots: {used} of {per_day} in the last day, budget spent: "
                "the board stays up (no reboot until one is older than a day)"]
    return [f"  reboots: {used} of {per_day} in the last day"]


def render(doc: Mapping[str, Any], now: float | None = None) -> list[str]:
    """The one-screen summary of a /status document."""
    now = time.time() if now is None else now
    lines = [f"failberry {doc.get('version', '?')}: {doc.get('state', '?')}, "
             f"mode {doc.get('mode', '?')}, up {_duration(doc.get('uptime_s'))}",
             f"health: {str(doc.get('status', '?')).upper()} ({doc.get('reason', '')})"]
    modem = doc.get("modem")
    if isinstance(modem, Mapping):
        words = [f"modem: {modem.get('state', '?')}"]
        if modem.get("signal_dbm") is not None:
            words.append(f"signal {modem['signal_dbm']} dBm")
        for key in ("operator", "access_tech", "registration"):
            if modem.get(key):
                words.append(str(modem[key]))
        if modem.get("data_path"):
            words.append(f"via {modem['data_path']}")
        if modem.get("address"):
            words.append(f"address {modem['address']}" + (
                " (private: NAT, no inbound)" if modem.get("private_address") else ""))
        if modem.get("ladder_rung"):
            words.append(f"recovery: {modem['ladder_rung']}")
        if modem.get("reason"):
            words.append(str(modem["reason"]))
        lines.append(", ".join(words))
        if modem.get("last_error"):
            lines.append(f"  last error: {modem['last_error']}")
        refused = modem.get("refused")
        if isinstance(refused, Mapping) and refused:
            lines.append("  refused for good: " + "; ".join(
                f"{rung} ({why})" for rung, why in refused.items()))
        lines.extend(_reboot_budget_lines(modem))
    else:
        lines.append("modem: not reported")
    uplinks = doc.get("uplinks")
    if isinstance(uplinks, Mapping) and uplinks:
        lines.append(f"uplinks (active: {doc.get('active_uplink') or 'none'}):")
        lines.extend(_uplink_line(n, u) for n, u in uplinks.items() if isinstance(u, Mapping))
    else:
        lines.append("uplinks: not reported")
    if doc.get("inbound_warning"):
        lines.append(f"warning: {doc['inbound_warning']}")
    fws = ((doc.get("parts") or {}).get("network") or {}).get("forwards")
    if isinstance(fws, Mapping) and fws:
        lines.append("forwards: " + ", ".join(
            f"{n} in {_bytes(c.get('bytes_in'))}, out {_bytes(c.get('bytes_out'))}"
            for n, c in fws.items() if isinstance(c, Mapping)))
    data = doc.get("data")
    if isinstance(data, Mapping):
        cap = data.get("cap_bytes") or 0
        used = data.get("used_bytes")
        text = f"mobile data: {_bytes(used)}"
        if cap:
            pct = 100.0 * float(used or 0) / float(cap)
            text += f" of {_bytes(cap)} ({pct:.0f}%)"
            if data.get("capped"):
                text += ", CAP REACHED: critical devices only"
        lines.append(text)
        devices = data.get("devices") or {}
        if isinstance(devices, Mapping) and devices:
            top = sorted(devices.items(), key=lambda kv: -float(kv[1] or 0))[:3]
            lines.append("  top: " + ", ".join(f"{d} {_bytes(b)}" for d, b in top))
    events = doc.get("events") or []
    if events:
        lines.append(f"last failovers ({doc.get('failovers_total', len(events))} in all):")
        for e in list(events)[-5:]:
            if isinstance(e, Mapping):
                lines.append(f"  {_ago(e.get('at'), now):>9}  {e.get('previous') or 'none'}"
                             f" -> {e.get('uplink') or 'none'}: {e.get('reason', '')}")
    dyn = doc.get("dyndns")
    if isinstance(dyn, Mapping):
        lines.append(f"dns: {dyn.get('name') or '?'} -> {dyn.get('address') or '?'} "
                     f"({dyn.get('state', '?')}), updated {_ago(dyn.get('last_success'), now)}"
                     f", confirmed {_ago(dyn.get('last_confirmed'), now)}")
        if dyn.get("waiting_for"):
            lines.append(f"  waiting for {dyn['waiting_for']}")
        if dyn.get("last_error"):
            lines.append(f"  last error: {dyn['last_error']}")
    pi = (doc.get("parts") or {}).get("pihealth")
    if isinstance(pi, Mapping):
        lines.extend(_pihealth_lines(pi, now))
    alerts = (doc.get("parts") or {}).get("alerts")
    if isinstance(alerts, Mapping):
        lines.extend(_alerts_lines(alerts, now))
    stale = [n for n, p in (doc.get("parts") or {}).items()
             if isinstance(p, Mapping) and p.get("stale")]
    if stale:
        lines.append(f"not reporting: {', '.join(sorted(stale))}")
    restarts = doc.get("restarts")
    crashed = sorted(f"{n} {c}" for n, c in restarts.items() if isinstance(c, int) and c > 0) \
        if isinstance(restarts, Mapping) else []
    if crashed:
        lines.append(f"restarts: {', '.join(crashed)} (crashed and rebuilt; see the journal)")
    return lines


def check_url(url: str) -> str:
    """`--url` as given, if it is an http(s) URL with a host; UsageError otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"--url: {url} is not an http:// URL (e.g. http://127.0.0.1:9000/status)")
    return url


def cmd_status(args: argparse.Namespace) -> int:
    """Show the supervisor's status; exit 1 when it is not running."""
    url = check_url(args.url) if args.url else status_url(args.config)
    doc = fetch(url)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print("\n".join(render(doc)))
    return 0
