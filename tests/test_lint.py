"""Linters run as ordinary tests: ruff over everything, mypy --strict over src/."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_ruff_clean() -> None:
    dirs = [d for d in ("src", "tests", "bench", "scripts") if (ROOT / d).is_dir()]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", *dirs], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "src"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
