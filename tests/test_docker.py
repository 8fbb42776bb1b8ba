"""Docker, for real: dockerd 20.10 from Debian with `oci-systemd-runtime` registered by
`oci-systemd-hook install --docker --docker-config <scratch>`.

The daemon is the tests' own (tests/enginelib.Dockerd): scratch roots and socket, no
iptables, no bridge, containers with `--network none`, in a private mount namespace.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.enginelib import IMAGE, Dockerd, hook_env, install_wrapper, require
from tests.realboot import image_rootfs

pytestmark = [pytest.mark.root, pytest.mark.realboot]

RUN = ("run", "-d", "--runtime", "oci-systemd", "--network", "none", "--stop-signal", "RTMIN+3")


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    require("dockerd", "/usr/bin/docker", "runc")
    rootfs = image_rootfs()
    scratch = tmp_path_factory.mktemp("docker")
    daemon_json = scratch / "daemon.json"
    daemon_json.write_text('{"log-level": "warn"}\n')
    install_wrapper(scratch, "--docker-config", str(daemon_json))
    daemon = Dockerd(scratch, daemon_json, hook_env(scratch))
    try:
        daemon.import_rootfs(rootfs)
        yield daemon
    finally:
        daemon.stop()


def _wait_running(d: Dockerd, name: str, timeout: float = 60) -> tuple[str, str]:
    """`systemctl is-system-running` until running/degraded; then the failed units."""
    deadline = time.monotonic() + timeout
    word = ""
    while time.monotonic() < deadline:
        if d.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
            return "stopped", ""
        proc = d.docker("exec", name, "systemctl", "is-system-running", check=False)
        lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        word = lines[-1] if lines else ""
        if word in ("running", "degraded"):
            break
        time.sleep(0.1)
    failed = d.docker("exec", name, "systemctl", "--failed", "--no-legend", check=False).stdout.strip()
    return word, failed


def _full_id(d: Dockerd, name: str) -> str:
    return d.docker("inspect", "-f", "{{.Id}}", name).stdout.strip()


def _cgroup_dirs(cid: str) -> list[str]:
    """Directories named after the container in any cgroup hierarchy of the host."""
    found = []
    for top in Path("/sys/fs/cgroup").iterdir():
        for candidate in (top / "docker" / cid, top / "system.slice" / f"docker-{cid}.scope"):
            if candidate.exists():
                found.append(str(candidate))
    unified = Path("/sys/fs/cgroup/unified/docker") / cid
    if unified.exists():
        found.append(str(unified))
    return found


def _host_mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _hook_leftovers(d: Dockerd) -> list[str]:
    """What the hook keeps per container in its scratch state root (nothing once deleted)."""
    state = d.scratch / "hook-state"
    claims = state / ".machine-ids"
    return sorted(p.name for p in state.iterdir() if p.name != ".machine-ids") + \
        sorted(f"claim {p.name}" for p in (claims.iterdir() if claims.is_dir() else ()))


def _check_boot_stop_remove(d: Dockerd, name: str, *extra: str) -> None:
    host_before = _host_mounts()
    daemon_before = d.mount_points()
    d.docker(*RUN, "--name", name, *extra, IMAGE, "/sbin/init")
    cid = _full_id(d, name)
    try:
        word, failed = _wait_running(d, name)
        assert (word, failed) == ("running", ""), d.docker("logs", name, check=False).stdout[-2000:]
        # the hook did its work: systemd sees the tmpfs it made and its container manager
        mounts = d.docker("exec", name, "findmnt", "-n", "-o", "TARGET,FSTYPE", "/run").stdout.split()
        assert mounts == ["/run", "tmpfs"]
        assert d.docker("exec", name, "cat", "/run/host/container-manager").stdout.strip()
        assert cid in os.listdir(d.scratch / "hook-state")
        started = time.monotonic()
        d.docker("stop", name)
        assert time.monotonic() - started < 5
        assert d.docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        d.docker("rm", "-f", name, check=False)
    assert _hook_leftovers(d) == []
    assert _cgroup_dirs(cid) == []
    assert d.mount_points() == daemon_before
    assert _host_mounts() == host_before
    # the journal is what the hook keeps on purpose (journal=keep): linked under the journal root
    journal = d.scratch / "journal"
    assert all(p.is_symlink() for p in journal.iterdir() if not p.name.startswith("."))


def test_install_docker_wrote_only_the_runtime_entry(dockerd: Dockerd) -> None:
    config = json.loads((dockerd.scratch / "daemon.json").read_text())
    assert config == {"log-level": "warn",
                      "runtimes": {"oci-systemd": {"path": str(dockerd.scratch / "prefix/bin/oci-systemd-runtime")}}}
    assert "oci-systemd" in dockerd.docker("info", "-f", "{{json .Runtimes}}").stdout


def test_boots_stops_and_leaves_nothing(dockerd: Dockerd) -> None:
    _check_boot_stop_remove(dockerd, "plain")


def test_wait_for_readiness_then_stop(dockerd: Dockerd) -> None:
    """The wrapper sets NOTIFY_SOCKET=/run/host/notify: `oci-systemd-hook wait` returns once systemd
    said READY=1, and a `docker stop` right then halts it cleanly; the relay goes with it."""
    import subprocess
    import sys

    from tests.fakecontainer import REPO

    d = dockerd
    d.docker(*RUN, "--name", "ready", IMAGE, "/sbin/init")
    cid = _full_id(d, "ready")
    try:
        res = subprocess.run([sys.executable, "-m", "oci_systemd_hook", "wait", cid, "--timeout", "60",
                              "--state-dir", str(d.scratch / "hook-state")], capture_output=True, text=True,
                             cwd=REPO, timeout=120)
        assert res.returncode == 0 and ": ready" in res.stdout, res
        relay = json.loads((d.scratch / "hook-state" / cid / "record.json").read_text())["relay"][0]
        d.docker("stop", "ready")
        assert d.docker("inspect", "-f", "{{.State.ExitCode}}", "ready").stdout.strip() == "0"
    finally:
        d.docker("rm", "-f", "ready", check=False)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{relay}") and time.monotonic() < deadline:
        if Path(f"/proc/{relay}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        assert not os.path.exists(f"/proc/{relay}"), "the relay outlived the container"
    assert _hook_leftovers(d) == []


@pytest.mark.parametrize("case, extra", [
    ("read-only", ("--read-only",)),
    ("tmpfs-run", ("--tmpfs", "/run")),
    ("memory", ("--memory", "512m")),
    ("cgroupns-private", ("--cgroupns", "private")),
])
def test_boots_with_docker_options(dockerd: Dockerd, case: str, extra: tuple[str, ...]) -> None:
    _check_boot_stop_remove(dockerd, case, *extra)


def test_restart(dockerd: Dockerd) -> None:
    d = dockerd
    d.docker(*RUN, "--name", "restart", IMAGE, "/sbin/init")
    cid = _full_id(d, "restart")
    try:
        assert _wait_running(d, "restart") == ("running", "")
        machine_id = d.docker("exec", "restart", "cat", "/etc/machine-id").stdout
        d.docker("exec", "restart", "touch", "/run/before-restart")
        d.docker("restart", "restart")
        assert _wait_running(d, "restart") == ("running", "")
        # poststop and prestart ran again: a fresh /run, the same machine id
        assert d.docker("exec", "restart", "test", "-e", "/run/before-restart", check=False).returncode == 1
        assert d.docker("exec", "restart", "cat", "/etc/machine-id").stdout == machine_id
        d.docker("stop", "restart")
    finally:
        d.docker("rm", "-f", "restart", check=False)
    assert _hook_leftovers(d) == []
    assert _cgroup_dirs(cid) == []


def _mount_view(d: Dockerd, runtime: str, *args: str) -> list[str]:
    """The mount points a container sees, as `cat /proc/self/mountinfo` prints them."""
    out = d.docker("run", "--rm", "--runtime", runtime, "--network", "none", *args).stdout
    return [line.split()[4] for line in out.splitlines()]


def test_non_systemd_container_is_as_with_plain_runc(dockerd: Dockerd) -> None:
    command = (IMAGE, "cat", "/proc/self/mountinfo")
    assert _mount_view(dockerd, "oci-systemd", *command) == _mount_view(dockerd, "runc", *command)
    assert _hook_leftovers(dockerd) == []


def test_disabled_env_is_as_with_plain_runc(dockerd: Dockerd, tmp_path: Path) -> None:
    # An "init" command would make it a systemd container; the env turns the hook off.
    init = tmp_path / "init"
    init.write_text("#!/bin/sh\nexec cat /proc/self/mountinfo\n")
    init.chmod(0o755)
    command = ("-v", f"{init}:/opt/init:ro", IMAGE, "/opt/init")
    with_hook = _mount_view(dockerd, "oci-systemd", *command)
    assert "/run" in with_hook
    disabled = _mount_view(dockerd, "oci-systemd", "--env", "oci-systemd-hook=disabled", *command)
    assert disabled == _mount_view(dockerd, "runc", *command)
    assert "/run" not in disabled
    assert _hook_leftovers(dockerd) == []
