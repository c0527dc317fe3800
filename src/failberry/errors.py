"""The error tree. Library code raises these; only `cli` turns them into exit codes."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


class FailberryError(Exception):
    """Root of every error failberry raises on purpose. `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(FailberryError):
    """Bad input from the user (arguments, files): exit status 2."""

    exit_code = 2


class ConfigIssue:
    """One problem in a config file, at a key path."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __repr__(self) -> str:
        return f"ConfigIssue({self.path!r}, {self.message!r})"


class ConfigError(UsageError):
    """A config file failed validation; carries every issue found, not only the first."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = list(issues)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per issue, `FILE: key.path: message`."""
        return [f"{self.source}: {issue}" for issue in self.issues]


class CommandFailed(FailberryError):
    """A subprocess failed; the message names the command line, the status and stderr's end."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        if returncode < 0:
            how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with status {returncode}"
        tail = stderr_tail.strip().splitlines()[-1:] if stderr_tail.strip() else []
        msg = f"`{shlex.join(self.argv)}` {how}"
        if tail:
            msg += f": {tail[0]}"
        super().__init__(msg)
