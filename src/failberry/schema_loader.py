"""The config loader: builds the frozen dataclasses `failberry.schema` declares from TOML
tables, collecting every error under its key path; secrets read inline or from `*_file`."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failberry.errors import ConfigError, ConfigIssue
from failberry.schema import Secret, toml_key, type_name


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
