"""Packaging, as a packager sees it: the sdist and the wheel build (PEP 517), carry what they
need, and the tests run from the unpacked sdist."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.fakecontainer import REPO

pytest.importorskip("build")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_sdist_carries_what_it_needs(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in",
                   "hooks.d/oci-systemd-hook.json", "man/oci-systemd-hook.1.md", "man/oci-systemd-hook.1",
                   "man/Makefile", "scripts/setup", "scripts/test", "scripts/build-image", ".ci/run",
                   "tests/conftest.py", "tests/test_plan.py", "tests/realboot.py", "bench/bench.py",
                   "oci_systemd_hook/oci-hooks.schema.json", "oci_systemd_hook/py.typed"):
        assert needed in names, needed
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_wheel_carries_the_package_data_and_metadata(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for needed in ("oci_systemd_hook/cli.py", "oci_systemd_hook/oci-state.schema.json",
                   "oci_systemd_hook/oci-config.schema.json", "oci_systemd_hook/oci-hooks.schema.json",
                   "oci_systemd_hook/py.typed"):
        assert needed in names, needed
    assert any(n.endswith("share/man/man1/oci-systemd-hook.1") for n in names)
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)
    assert "oci-systemd-hook = oci_systemd_hook.cli:main" in entry_points
    for version in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        assert f"Classifier: Programming Language :: Python :: {version}\n" in metadata
    assert "Requires-Python: >=3.9" in metadata
    assert "Project-URL:" in metadata


def test_tests_run_from_the_unpacked_sdist(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path)
    (root,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    where = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.');"
                            "import oci_systemd_hook; print(oci_systemd_hook.__file__)"],
                           cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(root))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_plan.py",
                          "tests/test_settings.py", "tests/test_ids.py", "tests/test_spec.py", "tests/test_manpage.py"],
                         cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout.splitlines()[-1]
