"""ruff and mypy are part of the test suite: a lint or type error fails CI like a test."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.fakecontainer import REPO


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.skipif(shutil.which("ruff") is None and run([sys.executable, "-m", "ruff", "--version"]).returncode,
                    reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff() -> None:
    res = run([sys.executable, "-m", "ruff", "check", "."])
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_on_the_package() -> None:
    pytest.importorskip("mypy")
    res = run([sys.executable, "-m", "mypy", "oci_systemd_hook"])
    assert res.returncode == 0, res.stdout + res.stderr
