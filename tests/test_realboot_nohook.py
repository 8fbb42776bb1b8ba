"""Without any hook, systemd cannot boot in an unprivileged runc container.

This is the baseline the hook's real-boot tests are measured against, and a check of the
harness in tests/realboot.py: whatever happens, it leaves no mounts, runtime state,
cgroups or processes behind.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import pytest

from tests import realboot

pytestmark = [
    pytest.mark.root,
    pytest.mark.realboot,
    pytest.mark.skipif(os.geteuid() != 0, reason="boots containers: needs root"),
]


def leftover_cgroups(container_id: str) -> list[str]:
    """Cgroup directories named after the container, in any hierarchy (v1 or unified)."""
    return glob.glob(f"/sys/fs/cgroup/*/{container_id}") + glob.glob(
        f"/sys/fs/cgroup/*/**/{container_id}", recursive=True
    )


def process_gone(pid: int, timeout: float = 5) -> bool:
    """True once `pid` has exited (a zombie waiting for the host's init to reap it counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def assert_nothing_left(c: realboot.Container, mounts_before: list[str]) -> None:
    assert realboot.mount_points() == mounts_before
    assert not c.state_root.exists() or not any(c.state_root.iterdir())
    assert not Path("/run/runc", c.id).exists()
    assert leftover_cgroups(c.id) == []
    assert c.ns.pid is None  # the cgroup v2 namespace holder, if any, is gone


@pytest.mark.parametrize("cgroup", ["v1", "v2"])
def test_systemd_exits_without_hook(tmp_path: Path, cgroup: str) -> None:
    mounts_before = realboot.mount_points()
    with realboot.Container(tmp_path, cgroup=cgroup, console=True) as c:
        c.create()
        c.start()
        word, _failed = c.wait_running(timeout=30)
        assert word == "stopped"
        assert "Failed to mount tmpfs at /run" in c.console_text()
        c.delete()
        assert not (c.state_root / c.id).exists()
    assert_nothing_left(c, mounts_before)


@pytest.mark.parametrize("cgroup", ["v1", "v2"])
def test_cleanup_runs_when_a_test_fails(tmp_path: Path, cgroup: str) -> None:
    mounts_before = realboot.mount_points()
    c = realboot.Container(tmp_path, cgroup=cgroup, args=["sleep", "infinity"])
    with pytest.raises(RuntimeError, match="test failed here"), c:
        c.create()
        c.start()
        pid = c.pid
        assert Path(f"/proc/{pid}").exists()
        (c.rootfs / "etc" / "written-by-test").write_text("x")
        raise RuntimeError("test failed here")
    assert process_gone(pid)
    assert not (realboot.image_rootfs() / "etc" / "written-by-test").exists()
    assert_nothing_left(c, mounts_before)
