"""`/metrics`: the /status document in the Prometheus text exposition format (0.0.4).

Names are prefixed `failberry_`, in base units (seconds, bytes, ratios), counters end in
`_total`, every family has HELP and TYPE lines, and per-uplink values carry an `uplink` label.
A value a part has not reported yet is left out rather than invented."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        rows = [(labels, v) for labels, v in samples]
        if not rows:
            return
        full = f"failberry_{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in rows:
            if labels:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                self.lines.append(f"{full}{{{inner}}} {_number(value)}")
            else:
                self.lines.append(f"{full} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: Any) -> None:
        v = _num(value)
        self.family(name, kind, help_text, [] if v is None else [({}, v)])


def _per(items: Mapping[str, Any], key: str, label: str, scale: float = 1.0) -> list[Sample]:
    out: list[Sample] = []
    for name, item in sorted(items.items()):
        v = _num(item.get(key)) if isinstance(item, Mapping) else None
        if v is not None:
            out.append(({label: name}, v * scale))
    return out


def render(doc: Mapping[str, Any]) -> str:
    """The exposition text for a /status document (`failberry.web.health.HealthApp.document`)."""
    w = _Writer()
    versions = doc.get("versions") or {}
    w.family("build_info", "gauge", "The running failberry; labels carry the versions.",
             [({"version": str(doc.get("version", "")),
                "python": str(versions.get("python", ""))}, 1.0)])
    w.one("healthy", "gauge", "1 when /health answers 200 (the published path works).",
          doc.get("status") == "ok")
    w.one("start_time_seconds", "gauge", "When the supervisor started, Unix time.",
          doc.get("started_at"))
    w.one("uptime_seconds", "gauge", "Seconds since the supervisor started.",
          doc.get("uptime_s"))
    parts: Mapping[str, Any] = doc.get("parts") or {}
    w.family("part_report_age_seconds", "gauge", "Seconds since each part last reported.",
             _per(parts, "age_s", "part"))
    w.family("part_stale", "gauge", "1 when a part is past its reporting deadline.",
             _per(parts, "stale", "part"))
    restarts: Mapping[str, Any] = doc.get("restarts") or {}
    w.family("part_restarts_total", "counter", "Times each part crashed and was restarted.",
             [({"part": k}, float(v)) for k, v in sorted(restarts.items())])
    _uplinks(w, doc)
    _data(w, doc)
    _forwards(w, parts.get("network"))
    _modem(w, doc.get("modem"))
    _dyndns(w, doc.get("dyndns"))
    _pihealth(w, parts.get("pihealth"))
    _alerts(w, parts.get("alerts"))
    _http(w, doc.get("http") or {})
    return "\n".join(w.lines) + "\n"


def _uplinks(w: _Writer, doc: Mapping[str, Any]) -> None:
    ups: Mapping[str, Any] = doc.get("uplinks") or {}
    w.family("uplink_up", "gauge", "1 when the uplink passes its probes.",
             _per(ups, "up", "uplink"))
    w.family("uplink_active", "gauge", "1 for the uplink carrying traffic now.",
             _per(ups, "active", "uplink"))
    w.family("uplink_carrier", "gauge", "1 when the uplink's link layer is up.",
             _per(ups, "carrier", "uplink"))
    w.family("uplink_latency_seconds", "gauge", "Probe round-trip time over the uplink.",
             _per(ups, "latency_ms", "uplink", 0.001))
    w.family("uplink_loss_ratio", "gauge", "Share of probes lost over the uplink, 0 to 1.",
             _per(ups, "loss_pct", "uplink", 0.01))
    w.family("uplink_receive_bytes_total", "counter", "Bytes received on the uplink.",
             _per(ups, "rx_bytes", "uplink"))
    w.family("uplink_transmit_bytes_total", "counter", "Bytes sent on the uplink.",
             _per(ups, "tx_bytes", "uplink"))
    if doc.get("uplinks") is not None and ups:
        w.one("failovers_total", "counter", "Times the active uplink changed.",
              doc.get("failovers_total", 0))


def _data(w: _Writer, doc: Mapping[str, Any]) -> None:
    data = doc.get("data")
    if not isinstance(data, Mapping):
        return
    w.one("mobile_data_used_bytes", "gauge", "Mobile data used this period.",
          data.get("used_bytes"))
    w.one("mobile_data_cap_bytes", "gauge", "The monthly mobile data cap; 0 for none.",
          data.get("cap_bytes"))
    w.one("mobile_data_capped", "gauge", "1 when the cap is reached (critical devices only).",
          data.get("capped"))
    devices: Mapping[str, Any] = data.get("devices") or {}
    w.family("mobile_device_data_used_bytes", "gauge",
             "Mobile data used this period by each LAN device.",
             [({"device": k}, float(v)) for k, v in sorted(devices.items())
              if _num(v) is not None])


def _forwards(w: _Writer, net: Any) -> None:
    fws = net.get("forwards") if isinstance(net, Mapping) else None
    if not isinstance(fws, Mapping) or not fws:
        return
    for unit in ("packets", "bytes"):
        w.family(f"forward_{unit}_total", "counter",
                 f"{unit.capitalize()} of each [[forward]]: in (to the LAN host) and out "
                 "(its replies).",
                 [({"forward": name, "direction": d}, v)
                  for name, c in sorted(fws.items()) if isinstance(c, Mapping)
                  for d in ("in", "out")
                  if (v := _num(c.get(f"{unit}_{d}"))) is not None])


def _modem(w: _Writer, modem: Any) -> None:
    if not isinstance(modem, Mapping):
        return
    w.family("modem_state", "gauge", "1 for the modem's current state.",
             [({"state": str(modem.get("state", ""))}, 1.0)])
    w.one("modem_connected", "gauge", "1 when the modem's data link is up.",
          modem.get("state") == "connected")
    w.one("modem_signal_dbm", "gauge", "Received signal strength in dBm.",
          modem.get("signal_dbm"))
    counts = modem.get("ladder_counts")
    w.family("modem_ladder_tries", "gauge", "Tries of each recovery rung in the current climb.",
             [({"rung": str(k)}, float(v)) for k, v in sorted(counts.items())
              if _num(v) is not None] if isinstance(counts, Mapping) else [])
    w.one("modem_receive_bytes_total", "counter", "Bytes received over the modem link.",
          modem.get("bytes_in"))
    w.one("modem_transmit_bytes_total", "counter", "Bytes sent over the modem link.",
          modem.get("bytes_out"))


def _dyndns(w: _Writer, dyndns: Any) -> None:
    if not isinstance(dyndns, Mapping):
        return
    w.one("dyndns_last_success_timestamp_seconds", "gauge",
          "When the DNS record was last updated, Unix time.", dyndns.get("last_success"))
    w.one("dyndns_last_confirmed_timestamp_seconds", "gauge",
          "When the DNS record was last seen right, Unix time.", dyndns.get("last_confirmed"))
    w.one("dyndns_error", "gauge", "1 while the last update attempt failed.",
          dyndns.get("last_error") not in (None, ""))


def _pihealth(w: _Writer, pi: Any) -> None:
    """The Pi's own health (failberry.pihealth); each family only where the board has it."""
    if not isinstance(pi, Mapping):
        return
    power = pi.get("power")
    if isinstance(power, Mapping):
        w.one("undervoltage", "gauge", "1 while the Pi reports under-voltage.",
              power.get("undervoltage"))
        w.one("undervoltage_events_total", "counter", "Under-voltage events since boot.",
              power.get("events_total"))
        w.one("undervoltage_seconds_total", "counter", "Seconds under-voltage since boot.",
              power.get("seconds_total"))
    throttle = pi.get("throttle")
    if isinstance(throttle, Mapping):
        w.family("firmware_throttle", "gauge",
                 "1 while the firmware reports the condition (vcgencmd get_throttled).",
                 [({"condition": str(k)}, 1.0 if v else 0.0) for k, v in sorted(throttle.items())
                  if not str(k).endswith("_occurred")])
    temp = pi.get("temperature")
    if isinstance(temp, Mapping):
        zones: Mapping[str, Any] = temp.get("zones") or {}
        w.family("temperature_celsius", "gauge", "Temperature of each thermal zone.",
                 [({"zone": str(k)}, float(v)) for k, v in sorted(zones.items())
                  if _num(v) is not None])
        w.one("temperature_warning_celsius", "gauge", "The configured warning temperature.",
              temp.get("warning_celsius"))
        w.one("temperature_hot", "gauge", "1 while a zone is over the warning temperature.",
              temp.get("hot"))
    storage = pi.get("storage")
    if isinstance(storage, Mapping):
        w.one("root_filesystem_readonly", "gauge", "1 while / is mounted read-only.",
              storage.get("root_readonly"))
        w.one("sd_errors_total", "counter",
              "SD card and file system error lines in the kernel log since boot.",
              storage.get("errors_total"))


def _alerts(w: _Writer, alerts: Any) -> None:
    """Messages per alert channel (failberry.alerts), the health checks' share of the data."""
    if not isinstance(alerts, Mapping):
        return
    channels: Mapping[str, Any] = alerts.get("channels") or {}
    w.family("alerts_sent_total", "counter", "Alert messages delivered, per channel.",
             _per(channels, "sent", "channel"))
    w.family("alerts_failed_total", "counter", "Alert delivery attempts that failed.",
             _per(channels, "failed", "channel"))
    w.family("alerts_dropped_total", "counter", "Alert messages given up on.",
             _per(channels, "dropped", "channel"))
    w.family("alerts_queued", "gauge", "Alert messages waiting (queued or held).",
             [({"channel": k}, float(v.get("queued", 0) + v.get("held", 0)))
              for k, v in sorted(channels.items()) if isinstance(v, Mapping)])
    w.one("mobile_health_check_bytes", "gauge",
          "Mobile data this period used by health checks polling us.",
          alerts.get("health_check_bytes"))
    forecast = alerts.get("forecast")
    if isinstance(forecast, Mapping):
        w.one("mobile_data_forecast_bytes", "gauge",
              "Mobile data expected at the cap reset at the current rate.",
              forecast.get("projected_bytes"))


def _http(w: _Writer, http: Mapping[str, Any]) -> None:
    requests: Mapping[str, Any] = http.get("requests") or {}
    w.family("http_requests_total", "counter", "Requests answered by the health endpoint.",
             [({"code": k}, float(v)) for k, v in sorted(requests.items())])
    w.one("http_connections", "gauge", "Open connections to the health endpoint.",
          http.get("connections"))
    w.one("http_connections_accepted_total", "counter", "Connections accepted.",
          http.get("accepted"))
    w.family("http_connections_dropped_total", "counter",
             "Connections closed by the server: evicted at the cap, or timed out.",
             [({"reason": "evicted"}, float(http.get("evicted", 0))),
              ({"reason": "timeout"}, float(http.get("timed_out", 0)))])
