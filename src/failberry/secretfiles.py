"""Files holding a config's secrets that every user can read: the config file itself when a
secret is written inline, and each `*_file` a secret is read from. On the image the build
writes the config 0600; a config an admin edits by hand is often 0644, and then the SIM PIN,
TSIG key or API secret is readable by any local user. `config check` and `run` say so."""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from failberry.schema import Secret, toml_key


def _secrets(obj: Any, raw: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    """(key path, TOML key, raw table) for every secret set in `obj`."""
    if not dataclasses.is_dataclass(obj) or not isinstance(raw, dict):
        return
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), toml_key(f.name)
        path = f"{where}.{key}" if where else key
        if isinstance(value, Secret):
            yield path, key, raw
        elif dataclasses.is_dataclass(value):
            yield from _secrets(value, raw.get(key), path)
        elif isinstance(value, dict):
            sub = raw.get(key)
            for name, item in value.items():
                yield from _secrets(item, sub.get(name) if isinstance(sub, dict) else None,
                                    f"{path}.{name}")
        elif isinstance(value, tuple) and isinstance(raw.get(key), list):
            for i, (item, table) in enumerate(zip(value, raw[key], strict=False)):
                yield from _secrets(item, table, f"{path}[{i}]")


def _world_readable(file: Path) -> int | None:
    """The file's mode when others may read it, else None (also when it cannot be read)."""
    try:
        mode = stat.S_IMODE(file.stat().st_mode)
    except OSError:
        return None
    return mode if mode & stat.S_IROTH else None


def exposed(config_path: Path, cfg: Any) -> list[str]:
    """One warning per world-readable file that holds one of `cfg`'s secrets."""
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files: dict[Path, list[str]] = {}
    for path, key, table in _secrets(cfg, raw, ""):
        if key in table:
            files.setdefault(config_path, []).append(path)
        elif isinstance(table.get(f"{key}_file"), str):
            file = Path(os.path.expanduser(table[f"{key}_file"]))
            file = file if file.is_absolute() else config_path.parent / file
            files.setdefault(file, []).append(f"{path}_file")
    # A webhook's URL is a capability (a Slack hook or an ntfy topic is all it takes to post
    # alerts or read them), though not a Secret-typed key: the config holding one counts.
    alerts = raw.get("alerts")
    if isinstance(alerts, dict) and alerts.get("webhooks"):
        files.setdefault(config_path, []).append("alerts.webhooks")
    out = []
    for file, keys in files.items():
        mode = _world_readable(file)
        if mode is not None:
            out.append(f"{file} holds secrets ({', '.join(keys)}) and every user can read "
                       f"it (mode {mode:04o}); chmod 600 {file}")
    return out
