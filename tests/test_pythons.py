"""Every CPython that distributions ship, 3.9 to 3.13: the unit tests pass under each, and a real
systemd container boots with the launcher `install` would write for each.

The interpreters come from pyenv (`pyenv versions`; $PYENV_ROOT/versions/X.Y.Z) or from PATH
(pythonX.Y). Each gets a virtual environment with the test tools, cached in
/var/cache/oci-systemd-hook/venvs (the package itself is not installed there: a .pth file puts
this checkout on its path). The interpreter running the suite is the one the rest of it covers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook.ids import machine_id_for
from oci_systemd_hook.installer import launcher_text
from tests import realboot
from tests.fakecontainer import REPO
from tests.hookwiring import hooks

VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
TOOLS = ("pytest", "hypothesis", "jsonschema")
VENVS = Path(os.environ.get("OSH_VENV_CACHE", "/var/cache/oci-systemd-hook/venvs"))
#: Unit tests: everything that needs neither root nor a runtime. (ruff and mypy run once, in
#: the suite's own interpreter; this file would recurse.)
UNIT_ARGS = ["-m", "not root and not realboot", "--ignore", "tests/test_lint.py", "--ignore",
             "tests/test_pythons.py", "--ignore", "tests/test_soak.py", "-p", "no:cacheprovider", "-q"]


def interpreter(version: str) -> Path | None:
    """The newest CPython `version` on this machine, or None."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = []
    for d in root.glob(version + ".*"):
        parts = d.name.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and (d / "bin" / "python3").exists():
            found.append((int(parts[2]), d / "bin" / "python3"))
    if found:
        return max(found)[1]
    which = shutil.which(f"python{version}")
    return Path(which) if which else None


def venv(version: str) -> Path:
    """The cached virtual environment with the test tools for `version`; made when missing."""
    python = interpreter(version)
    if python is None:
        pytest.skip(f"CPython {version} is not installed (pyenv install {version})")
    env = VENVS / f"py{version}"
    bin_python = env / "bin" / "python"
    ready = env / ".osh-ready"
    if not ready.exists() or ready.read_text() != str(python):
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([str(python), "-m", "venv", str(env)], check=True, capture_output=True)
        res = subprocess.run([str(bin_python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              *TOOLS], capture_output=True, text=True, timeout=600, check=False)
        assert res.returncode == 0, res.stderr
        ready.write_text(str(python))
    # This checkout on the venv's path, for the tests that start `python -I -m oci_systemd_hook`
    # (a .pth file: -I still reads them; nothing to build or install).
    purelib = subprocess.run([str(bin_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "oci_systemd_hook_checkout.pth").write_text(str(REPO) + "\n")
    return bin_python


@pytest.mark.parametrize("version", VERSIONS)
def test_unit_tests_pass(version: str) -> None:
    python = venv(version)
    res = subprocess.run([str(python), "-m", "pytest", *UNIT_ARGS, "tests"], cwd=REPO, capture_output=True,
                         text=True, timeout=1800, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, check=False)
    tail = "\n".join(res.stdout.splitlines()[-25:])
    assert res.returncode == 0, f"CPython {version}:\n{tail}\n{res.stderr[-2000:]}"
    print(f"CPython {version}: {res.stdout.splitlines()[-1]}")


@pytest.mark.root
@pytest.mark.realboot
@pytest.mark.parametrize("version", VERSIONS)
def test_real_boot_with_the_launcher_of_each(tmp_path: Path, version: str) -> None:
    realboot.require_root()
    python = interpreter(version)
    if python is None:
        pytest.skip(f"CPython {version} is not installed")
    launcher = tmp_path / "bin" / "oci-systemd-hook"
    launcher.parent.mkdir()
    launcher.write_text(launcher_text(str(python), str(REPO)))
    launcher.chmod(0o755)
    state_dir, journal_root = tmp_path / "state", tmp_path / "journal"
    journal_root.mkdir()
    with realboot.Container(tmp_path / "c", hooks=hooks(launcher, state_dir, journal_root),
                            container_id=f"py{version.replace('.', '')}-web1") as c:  # not hex: hashed id
        c.create()
        c.start()
        word, failed = c.wait_running(timeout=60)
        assert (word, failed.strip()) == ("running", ""), c.console_text() or c.output()
        assert c.exec(["cat", "/etc/machine-id"]).strip() == machine_id_for(c.id)
        c.kill(realboot.SIGRTMIN_3)
        assert c.wait_stopped(timeout=30)
        c.delete()
    assert not (state_dir / c.id).exists()
    assert sys.version_info >= (3, 9)
