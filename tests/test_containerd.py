"""containerd, for real: a standalone containerd 1.6 from Debian (CRI plugin off, scratch
root, state and socket, private mount namespace) and `ctr run --runtime
io.containerd.runc.v2 --runc-binary oci-systemd-runtime`, with ctr's default spec.

This is the path a Kubernetes RuntimeClass takes on containerd (runc.v2 with BinaryName),
minus the kubelet and the CRI plugin.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.enginelib import Containerd, hook_env, install_wrapper, require
from tests.realboot import image_rootfs

pytestmark = [pytest.mark.root, pytest.mark.realboot]


class Setup:
    def __init__(self, daemon: Containerd, wrapper: Path, rootfs: Path) -> None:
        self.daemon = daemon
        self.wrapper = wrapper
        self.rootfs = rootfs


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Setup]:
    require("containerd", "ctr", "containerd-shim-runc-v2", "runc")
    image = image_rootfs()
    wrapper = install_wrapper(tmp_path)
    rootfs = tmp_path / "rootfs"
    for d in (rootfs, tmp_path / "upper", tmp_path / "work"):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={image},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}", str(rootfs)],
                   check=True)
    daemon = None
    try:
        daemon = Containerd(tmp_path, hook_env(tmp_path))
        yield Setup(daemon, wrapper, rootfs)
    finally:
        if daemon is not None:
            for task in daemon.ctr("task", "ls", "-q", check=False).stdout.split():
                daemon.ctr("task", "delete", "--force", task, check=False)
            for container in daemon.ctr("container", "ls", "-q", check=False).stdout.split():
                daemon.ctr("container", "delete", container, check=False)
            daemon.stop()
        subprocess.run(["umount", str(rootfs)], check=False)


def _cgroup_dirs(name: str) -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/default/{name}")]


def _task_status(c: Containerd, name: str) -> str:
    for line in c.ctr("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == name:
            return fields[-1]
    return ""


def test_ctr_default_spec_boots_halts_and_leaves_nothing(containerd: Setup) -> None:
    c = containerd.daemon
    host_before = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    daemon_before = c.mount_points()
    c.ctr("run", "-d", "--null-io", "--runtime", "io.containerd.runc.v2", "--runc-binary", str(containerd.wrapper),
          "--rootfs", str(containerd.rootfs), "sys1", "/sbin/init")
    bundle = c.scratch / "state/io.containerd.runtime.v2.task/default/sys1"
    config = json.loads((bundle / "config.json").read_text())
    hook = str(c.scratch / "prefix/libexec/oci/hooks.d/oci-systemd-hook")
    assert [h["path"] for h in config["hooks"]["prestart"]] == [hook]
    assert [h["path"] for h in config["hooks"]["poststop"]] == [hook]
    assert [m for m in config["mounts"] if m["destination"] == "/sys/fs/cgroup"] == [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}]

    deadline = time.monotonic() + 60
    word = ""
    n = 0
    while time.monotonic() < deadline and word not in ("running", "degraded"):
        n += 1
        proc = c.ctr("task", "exec", "--exec-id", f"poll{n}", "sys1", "/usr/bin/systemctl", "is-system-running",
                     check=False)
        word = proc.stdout.strip()
        time.sleep(0.1)
    failed = c.ctr("task", "exec", "--exec-id", "failed", "sys1", "/usr/bin/systemctl", "--failed", "--no-legend")
    assert (word, failed.stdout.strip()) == ("running", "")
    assert "sys1" in [p.name for p in (c.scratch / "hook-state").iterdir()]

    c.ctr("task", "kill", "--signal", "SIGRTMIN+3", "sys1")  # systemd halts (as the README says)
    deadline = time.monotonic() + 10
    while _task_status(c, "sys1") != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _task_status(c, "sys1") == "STOPPED"
    c.ctr("task", "delete", "sys1")
    c.ctr("container", "delete", "sys1")

    state = c.scratch / "hook-state"
    assert [p.name for p in state.iterdir()] == []  # the machine-id claims went with it
    assert _cgroup_dirs("sys1") == []
    assert c.mount_points() == daemon_before
    assert [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()] == host_before


def test_ctr_non_systemd_container_untouched(containerd: Setup) -> None:
    c = containerd.daemon
    c.ctr("run", "-d", "--null-io", "--runtime", "io.containerd.runc.v2", "--runc-binary", str(containerd.wrapper),
          "--rootfs", str(containerd.rootfs), "plain", "/bin/sleep", "60")
    config = json.loads((c.scratch / "state/io.containerd.runtime.v2.task/default/plain/config.json").read_text())
    assert "hooks" not in config
    assert not any(m["destination"] == "/sys/fs/cgroup" for m in config["mounts"])
    c.ctr("task", "kill", "--signal", "9", "plain")
    deadline = time.monotonic() + 10
    while _task_status(c, "plain") != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.05)
    c.ctr("task", "delete", "plain")
    assert [p.name for p in (c.scratch / "hook-state").iterdir()] == []
