"""Shared pytest set-up: the repository on sys.path, and no test ever talks to the real syslog."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ["OCI_SYSTEMD_HOOK_SYSLOG_SOCKET"] = ""


def pytest_report_header() -> list[str]:
    """The systemd of each cached image the real-boot tests use, in every test run's output."""
    lines = []
    cache = Path(os.environ.get("OSH_IMAGE_CACHE") or "/var/cache/oci-systemd-hook")
    for release in ("debian-12", "debian-13", "debian-sid"):
        rootfs = cache / release / "rootfs"
        if not rootfs.is_dir():
            continue
        try:
            from oci_systemd_hook.cgroupview import guest_systemd_version
            from oci_systemd_hook.rootfs import Root

            with Root(str(rootfs)) as root:
                lines.append(f"image {release}: systemd {guest_systemd_version(root)}")
        except Exception as exc:  # a header must never fail the run
            lines.append(f"image {release}: systemd version unreadable ({exc})")
    return lines


@pytest.fixture(autouse=True)
def _no_mount_outlives_its_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After each test (its own assertions have run by then), unmount what is still mounted
    below pytest's temporary directories: a test that never ran poststop leaves its
    container's unix-export tmpfs on the host, and later tests would read a longer mount
    table (and pytest could not remove the directories)."""
    yield
    if os.geteuid() != 0:
        return
    from oci_systemd_hook.hostfacts import parse_mountinfo

    base = str(tmp_path_factory.getbasetemp().parent)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        left = [m.mountpoint for m in parse_mountinfo(f.read()) if m.mountpoint.startswith(base + "/")]
    for mountpoint in reversed(left):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)
