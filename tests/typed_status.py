"""The /status document's part sections read back as the dataclasses the parts (real and
fake) report through: a key a reader does not know, or a missing one, fails the test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from failberry import reports

_PART_KEYS = ("state", "age_s", "stale")  # the snapshot's own keys beside the report
TYPED = {"network": reports.NetworkReport, "dyndns": reports.DyndnsReport,
         "modem": reports.ModemReport, "pihealth": reports.PiHealthReport,
         "alerts": reports.AlertsReport}


def detail(section: Mapping[str, Any]) -> dict[str, Any]:
    """A part's section of `parts` without the snapshot's own keys."""
    return {k: v for k, v in section.items() if k not in _PART_KEYS}


def check(doc: Mapping[str, Any]) -> dict[str, object]:
    """Every typed part in `doc["parts"]`, parsed strictly; the parsed reports by name."""
    out: dict[str, object] = {}
    for name, cls in TYPED.items():
        section = doc["parts"].get(name)
        if section is not None:
            out[name] = reports.parse(cls, detail(section), name)
    return out
