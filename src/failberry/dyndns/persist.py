"""Remember a block (`badauth`, `abuse`, a rejected TSIG key) and a provider's "stay away" time
across restarts, for as long as the config stays the same.

Without this a crash loop, or a daily reboot, would send one more doomed update each time, and
dyndns2 providers treat repeated failed updates as abuse. "Until the config changes" is
checked with a salted, slow hash of the provider's settings, secrets included (changing only
the password is the usual fix for `badauth`); the file holds no secret and is mode 0600."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
from pathlib import Path
from typing import Any

from failberry.config import DyndnsConfig, Secret
from failberry.fileio import write_atomic

LOG = logging.getLogger(__name__)

STATE_FILE = "dyndns-state.json"  # in `paths.state_dir`


def _canonical(d: DyndnsConfig) -> bytes:
    """The settings that decide whether a blocked update could now succeed."""
    def plain(v: Any) -> Any:
        return v.reveal() if isinstance(v, Secret) else v

    subs: dict[str, Any] = {"rfc2136": d.rfc2136, "dyndns2": d.dyndns2,
                            "route53-lambda": d.route53_lambda, "route53": d.route53}
    sub = subs.get(d.provider.value)
    fields = {} if sub is None else {f.name: plain(getattr(sub, f.name))
                                     for f in dataclasses.fields(sub)}
    data = {"provider": d.provider.value, "name": d.name, "settings": fields}
    return json.dumps(data, sort_keys=True, default=str).encode()


def fingerprint(d: DyndnsConfig, salt: bytes) -> str:
    """A salted PBKDF2 of the provider settings (slow on purpose: it covers secrets)."""
    return hashlib.pbkdf2_hmac("sha256", _canonical(d), salt, 50_000).hex()


class StateFile:
    """Per-record block reasons and not-before times, valid only for one config."""

    def __init__(self, path: Path, cfg: DyndnsConfig) -> None:
        self.path = path
        self.cfg = cfg
        self._salt: bytes | None = None
        self._fp: tuple[bytes, str] | None = None
        self._warned = False
        self._last: dict[str, dict[str, Any]] | None = None

    def _fingerprint(self, salt: bytes) -> str:
        if self._fp is None or self._fp[0] != salt:
            self._fp = (salt, fingerprint(self.cfg, salt))
        return self._fp[1]

    def load(self) -> dict[str, dict[str, Any]]:
        """Saved state per record type, or {} when absent, unreadable or for another config."""
        try:
            data = json.loads(self.path.read_text())
            salt = bytes.fromhex(data["salt"])
            if data.get("fingerprint") != self._fingerprint(salt):
                LOG.info("dyndns: config changed since %s was written; starting afresh",
                         self.path)
                return {}
            self._salt = salt
            records = data.get("records", {})
            self._last = records if isinstance(records, dict) else {}
            return self._last
        except FileNotFoundError:
            self._last = {}  # nothing held: no file needed until something is
            return {}
        except (OSError, ValueError, KeyError, TypeError) as e:
            LOG.warning("dyndns: ignoring unreadable %s: %s", self.path, e)
            return {}

    def save(self, records: dict[str, dict[str, Any]]) -> None:
        """Write atomically, mode 0600, when it changed; a failure is logged once."""
        if records == self._last:
            return
        if self._salt is None:
            self._salt = secrets.token_bytes(16)
        data = {"salt": self._salt.hex(), "fingerprint": self._fingerprint(self._salt),
                "records": records}
        try:
            write_atomic(self.path, json.dumps(data), 0o600)
            self._last = records
        except OSError as e:
            if not self._warned:
                LOG.warning("dyndns: cannot save %s (%s); a block will not survive a restart",
                            self.path, e.strerror or e)
                self._warned = True
