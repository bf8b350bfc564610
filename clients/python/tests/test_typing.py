"""The package type-checks under ``mypy --strict``, and so does code that uses it: the
operations' return types reach callers of both clients (tests/typed_usage.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mypy(*args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", "/dev/null", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_is_mypy_strict_clean() -> None:
    mypy("src/mistersmith")


def test_callers_see_the_models() -> None:
    mypy("--python-version", "3.11", "tests/typed_usage.py")
