"""The config schema: fields (`opt`, `section`), the converters that check raw TOML values,
and `Secret`. The loader that builds frozen dataclasses from TOML tables is
`failberry.schema_loader`; the config model itself is `failberry.config`."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import field
from typing import Any

from failberry import checks
from failberry.units import parse_duration, parse_size


class Secret:
    """A secret value. Its `str` and `repr` are masked; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; only for the code that must send or write it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))



def enum_of(cls: type[enum.StrEnum]) -> Callable[[object], Any]:
    def conv(value: object) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"must be one of: {', '.join(m.value for m in cls)}")
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not one of: {', '.join(m.value for m in cls)}"
            ) from None

    return conv


def string(check: Callable[[str], str]) -> Callable[[object], str]:
    def conv(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {type_name(value)}")
        return check(value)

    return conv


def optional_string(check: Callable[[str], str]) -> Callable[[object], str]:
    """Like `string`, but the empty string means 'not set' and is kept."""
    inner = string(check)

    def conv(value: object) -> str:
        if value == "":
            return ""
        return inner(value)

    return conv


def string_list(check: Callable[[str], str]) -> Callable[[object], tuple[str, ...]]:
    def conv(value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of strings, not {type_name(value)}")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"item {i + 1} must be a string, not {type_name(item)}")
            try:
                out.append(check(item))
            except ValueError as e:
                raise ValueError(f"item {i + 1}: {e}") from None
        return tuple(out)

    return conv


def int_range(lo: int, hi: int) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {type_name(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo} to {hi}, not {value}")
        return value

    return conv


def port_list(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of port numbers, not {type_name(value)}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"item {i + 1} must be a port number, not {type_name(item)}")
        try:
            out.append(checks.port(item))
        except ValueError as e:
            raise ValueError(f"item {i + 1}: {e}") from None
    return tuple(out)


def port_range(value: object) -> str:
    """A port, 1194, or an inclusive range, "60000-60010"; kept as text ("1194",
    "60000-60010")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(checks.port(value))
    if not isinstance(value, str):
        raise ValueError(f"must be a port number or a range like \"60000-60010\", "
                         f"not {type_name(value)}")
    lo, sep, hi = value.partition("-")
    try:
        first, last = int(lo), int(hi if sep else lo)
    except ValueError:
        raise ValueError(f"{value!r} is not a port or a range like \"60000-60010\"") from None
    checks.port(first)
    checks.port(last)
    if last < first:
        raise ValueError(f"{value!r}: the range ends before it starts")
    return f"{first}-{last}" if last != first else str(first)


def port_bounds(text: str) -> tuple[int, int]:
    """`"1194"` to (1194, 1194), `"60000-60010"` to (60000, 60010)."""
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


class Duration:
    """A duration converter ("2s", "5m", 90): seconds as a float, from `lo` to `hi`.
    A class, not a closure, so writers (`config_render`) can tell a duration field."""

    def __init__(self, lo: float = 0.0, hi: float = 365 * 86400.0) -> None:
        self.lo, self.hi = lo, hi

    def __call__(self, value: object) -> float:
        seconds = parse_duration(value)
        if not self.lo <= seconds <= self.hi:
            raise ValueError(f"must be from {self.lo:g}s to {self.hi:g}s")
        return seconds


duration = Duration


def percent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number from 0 to 100, not {type_name(value)}")
    if not 0 <= value <= 100:
        raise ValueError(f"must be from 0 to 100, not {value}")
    return float(value)


class Size:
    """A byte count converter ("1GiB", 1073741824); a class so writers can tell a size field."""

    def __call__(self, value: object) -> int:
        return parse_size(value)


size = Size()


def type_name(value: object) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def opt(default: Any, conv: Callable[[object], Any] | None = None, *, required: bool = False,
        doc: str = "") -> Any:
    """A config field: its default, the converter that validates a raw TOML value, and a doc."""
    meta = {"conv": conv, "required": required, "doc": doc}
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A nested table."""
    return field(default_factory=cls, metadata={"section": True})


def bad(message: str) -> str:
    raise ValueError(message)


def one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of: {', '.join(allowed)}")
    return value


def no_quotes(value: str) -> str:
    if any(c in value for c in "'\"\\\n\r") or not value.isprintable():
        raise ValueError("must not contain quotes, backslashes or control characters")
    return value


def base64_text(value: str) -> str:
    import base64
    import binascii

    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (a TSIG secret from `tsig-keygen`)") from None
    return value


def abs_path(value: str) -> str:
    return value if value.startswith("/") else bad(f"{value!r} is not an absolute path")


def command(value: object) -> tuple[str, ...]:
    argv = string_list(lambda s: s if s else bad("must not be empty"))(value)
    if not argv:
        raise ValueError("must name a program")
    return argv


def dev_path(value: str) -> str:
    return value if value.startswith("/dev/") else bad("must be a path under /dev")


def usb_id(value: str) -> str:
    vid, sep, pid = value.partition(":")
    ok = sep and len(vid) == 4 and len(pid) == 4
    try:
        int(vid, 16)
        int(pid, 16)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{value!r} is not a USB id like \"19d2:0031\"")
    return value.lower()


def toml_key(name: str) -> str:
    """Python field names use `_`; the one TOML table with a hyphen is `route53-lambda`."""
    return "route53-lambda" if name == "route53_lambda" else name


def converter(f: dataclasses.Field[Any]) -> Callable[[object], Any] | None:
    """The converter a field was declared with (`opt(default, conv)`), or None."""
    conv = f.metadata.get("conv")
    return conv if callable(conv) else None
