"""The config schema machinery: fields (`opt`, `section`), the converters that check raw TOML
values, `Secret`, and the loader that builds frozen dataclasses from TOML tables with every
error collected under its key path. The config model itself is `failberry.config`."""

from __future__ import annotations

import dataclasses
import enum
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

from failberry import checks
from failberry.errors import ConfigError, ConfigIssue
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



# ---------------------------------------------------------------------------------------------
# Loading


def toml_key(name: str) -> str:
    """Python field names use `_`; the one TOML table with a hyphen is `route53-lambda`."""
    return "route53-lambda" if name == "route53_lambda" else name


def is_secret(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and Secret in typing.get_args(
        tp
    )


class Loader:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []

    def issue(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, message))

    def build(self, cls: type[Any], data: dict[str, Any], prefix: str) -> Any:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        names = {toml_key(f.name): f for f in fields}
        secret_files = {f"{toml_key(f.name)}_file": f for f in fields if is_secret(hints[f.name])}
        for key in data:
            if key not in names and key not in secret_files:
                self.issue(_join(prefix, key), f"unknown key (known: {', '.join(sorted(names))})")
        kwargs: dict[str, Any] = {}
        for key, f in names.items():
            path = _join(prefix, key)
            tp = hints[f.name]
            if f.metadata.get("section"):
                raw = data.get(key, {})
                if not isinstance(raw, dict):
                    self.issue(path, f"must be a table ([{path}]), not {type_name(raw)}")
                    continue
                kwargs[f.name] = self.build(tp, raw, path)
                continue
            if f.metadata.get("table_list"):
                if key in data:
                    kwargs[f.name] = self.table_list(typing.get_args(tp)[0], data[key], path)
                continue
            if is_secret(tp):
                secret = self.secret(data, key, path, f.metadata.get("conv"))
                if secret is not None:
                    kwargs[f.name] = secret
                continue
            if key not in data:
                if f.metadata.get("required"):
                    self.issue(path, "is required")
                continue
            value = self.convert(data[key], tp, f.metadata.get("conv"), path)
            if value is not _INVALID:
                kwargs[f.name] = value
        return cls(**kwargs)

    def table_list(self, cls: type[Any], raw: object, path: str) -> tuple[Any, ...]:
        """A list of tables (`[[forward]]`), each built like a section; the key paths count
        from 1: `forward[2].port` is the second entry's `port`."""
        if not isinstance(raw, list):
            self.issue(path, f"must be a list of tables ([[{path}]]), not {type_name(raw)}")
            return ()
        out = []
        for i, item in enumerate(raw):
            where = f"{path}[{i + 1}]"
            if not isinstance(item, dict):
                self.issue(where, f"must be a table ([[{path}]]), not {type_name(item)}")
                continue
            out.append(self.build(cls, item, where))
        return tuple(out)

    def secret(self, data: dict[str, Any], key: str, path: str,
               conv: Callable[[object], Any] | None) -> Secret | None:
        file_key = f"{key}_file"
        if key in data and file_key in data:
            self.issue(path, f"give either {key} or {file_key}, not both")
            return None
        if file_key in data:
            raw_path = data[file_key]
            if not isinstance(raw_path, str) or not raw_path:
                self.issue(f"{path}_file", "must be a path to a file")
                return None
            file = Path(os.path.expanduser(raw_path))
            if not file.is_absolute():
                file = self.base_dir / file
            try:
                text = file.read_text(encoding="utf-8").strip()
            except OSError as e:
                self.issue(f"{path}_file", f"cannot read {file}: {e.strerror or e}")
                return None
            except UnicodeDecodeError:
                self.issue(f"{path}_file", f"{file} is not UTF-8 text")
                return None
            value: object = text
            where = f"{path}_file"
        elif key in data:
            value = data[key]
            where = path
        else:
            return None
        # Messages about secrets never quote the value.
        if not isinstance(value, str):
            self.issue(where, f"must be a string, not {type_name(value)}")
            return None
        if conv is not None:
            try:
                conv(value)
            except ValueError as e:
                self.issue(where, _scrub(str(e), value))
                return None
        return Secret(value)

    def convert(self, raw: object, tp: Any, conv: Callable[[object], Any] | None,
                path: str) -> Any:
        try:
            if conv is not None:
                return conv(raw)
            if tp is bool:
                if not isinstance(raw, bool):
                    raise ValueError(f"must be true or false, not {type_name(raw)}")
                return raw
            if tp is int:
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise ValueError(f"must be a whole number, not {type_name(raw)}")
                return raw
            if tp is str:
                if not isinstance(raw, str):
                    raise ValueError(f"must be a string, not {type_name(raw)}")
                return raw
            raise TypeError(f"no converter for {tp}")  # a bug in the schema, not user input
        except ValueError as e:
            self.issue(path, str(e))
            return _INVALID


_INVALID = object()


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _scrub(message: str, secret: str) -> str:
    return message.replace(secret, "********") if secret else message


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message already carries "(at line L, column C)".
        raise ConfigError(source, [ConfigIssue("", f"TOML syntax error: {e}")]) from None


def read_text(path: Path) -> str:
    """A config file's text; a missing, unreadable or non-UTF-8 file is a ConfigError."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigIssue("", "no such file")]) from None
    except OSError as e:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read: {e.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [ConfigIssue("", "is not UTF-8 text")]) from None


def converter(f: dataclasses.Field[Any]) -> Callable[[object], Any] | None:
    """The converter a field was declared with (`opt(default, conv)`), or None."""
    conv = f.metadata.get("conv")
    return conv if callable(conv) else None
