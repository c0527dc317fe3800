"""Logging: syslog-priority prefixes for the journal under systemd, plain lines otherwise.

Secrets are `config.Secret`, masked wherever they are formatted. As a second line of defence
the supervisor registers the config's secret values here (`redact_secrets`), and every line
is scrubbed of them before it is written, whatever code formatted it."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
_MASK = "********"
_SECRETS: set[str] = set()


def _scrub(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class _JournalFormatter(logging.Formatter):
    """`<6>failberry.modem: message`: journald reads the `<N>` prefix as the priority."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = _scrub(super().format(record))
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


class _PlainFormatter(logging.Formatter):
    """`12:00:00 INFO    failberry.modem: message`."""

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record))


def on_journal(stream: Any = None) -> bool:
    """Whether `stream` (stderr) is connected to the journal: systemd sets JOURNAL_STREAM to
    its device:inode, which we compare so a child that inherited the variable is not fooled."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def redact_secrets(cfg: Any) -> None:
    """Scrub every `Secret` value in `cfg` (a config dataclass tree) from later log lines."""
    from failberry.config import Secret

    def walk(obj: Any) -> None:
        if isinstance(obj, Secret):
            if len(obj.reveal()) >= 4:  # a 1-3 character "secret" would mangle every line
                _SECRETS.add(obj.reveal())
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name))

    walk(cfg)


def setup(verbose: bool = False) -> None:
    """Configure the root logger once, for the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if on_journal():
        formatter = _JournalFormatter("%(name)s: %(message)s")
    else:
        formatter = _PlainFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                    "%H:%M:%S")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
