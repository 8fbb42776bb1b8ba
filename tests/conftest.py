"""Shared pytest set-up: the repository on sys.path, and no test ever talks to the real syslog."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
