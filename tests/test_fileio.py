"""The one atomic file write every state file goes through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from failberry.fileio import write_atomic


def test_replaces_content_and_sets_the_mode_over_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    write_atomic(path, "one", 0o644)
    assert path.read_text() == "one" and path.stat().st_mode & 0o777 == 0o644
    write_atomic(path, "two", 0o600)
    assert path.read_text() == "two" and path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # rename over a directory fails
    with pytest.raises(OSError):
        write_atomic(target, "x")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
