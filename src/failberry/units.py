"""Parsers for the value syntaxes the config uses: durations, sizes, ports."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_duration(value: object) -> float:
    """`"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"1d"` or a number of seconds, to seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as \"500ms\", \"10s\" or \"5m\"")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(
                f"{value!r} is not a duration; write a number and a unit: ms, s, m, h or d "
                "(\"500ms\", \"10s\", \"5m\")"
            )
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("must be a duration such as \"500ms\", \"10s\" or \"5m\"")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration that `parse_duration` reads back."""
    ms = round(seconds * 1000)
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


def parse_size(value: object) -> int:
    """`"2GiB"`, `"500MB"`, `"0"` or a number of bytes, to bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as \"2GiB\" or \"500MB\"")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(
                f"{value!r} is not a size; write a number and a unit: B, KB, MB, GB, KiB, MiB, "
                "GiB (\"2GiB\", \"500MB\")"
            )
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    else:
        raise ValueError("must be a size such as \"2GiB\" or \"500MB\"")
    if size < 0:
        raise ValueError("must not be negative")
    return size


def format_size(size: int) -> str:
    """A readable, exact spelling of a byte count that `parse_size` reads back."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _SIZE_UNITS[unit]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def human_size(size: float) -> str:
    """A rounded size for people: `1.4 GiB`."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
