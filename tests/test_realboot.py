"""The real thing: the cached Debian 12 image boots systemd under runc with the hook,
on this host's cgroup v1 hierarchy and on a cgroup v2 host (a private mount namespace),
and everything on the host is as before once the container is deleted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from oci_systemd_hook.ids import machine_id_for
from tests import realboot
from tests.fakecontainer import needs_root
from tests.hookwiring import hooks, write_launcher

pytestmark = [needs_root, pytest.mark.root, pytest.mark.realboot]


def boot_and_halt(tmp_path: Path, **container_args: object) -> dict[str, object]:
    """Boot with the hook, check everything the issue names, halt, delete; return facts."""
    state_dir, journal_root = tmp_path / "hook-state", tmp_path / "journal"
    journal_root.mkdir()
    launcher = write_launcher(tmp_path / "bin")
    before = realboot.mount_points()
    with realboot.Container(tmp_path / "c", hooks=hooks(launcher, state_dir, journal_root),
                            **container_args) as c:  # type: ignore[arg-type]
        c.create()
        c.start()
        word, failed = c.wait_running(timeout=60)
        assert (word, failed.strip()) == ("running", ""), c.console_text() or c.output()
        mid = machine_id_for(c.id)
        assert c.exec(["cat", "/etc/machine-id"]).strip() == mid
        assert c.exec(["systemd-detect-virt", "--container"], check=False).strip() != "none"
        assert c.exec(["cat", "/run/host/container-manager"]).strip() == "oci"
        # The container's journal is on the host, readable there with journalctl -D.
        jdir = journal_root / mid
        assert any(p.suffix == ".journal" for p in jdir.iterdir()), list(jdir.iterdir())
        c.exec(["logger", "-t", "osh-test", "hello from the container"])
        c.exec(["journalctl", "--sync"], check=False)
        out = subprocess.run(["journalctl", "-D", str(jdir), "-t", "osh-test", "-o", "cat"],
                             capture_output=True, text=True, check=False).stdout
        assert "hello from the container" in out
        assert (state_dir / c.id).is_dir()
        boot = c.boot_seconds

        c.kill(37)  # SIGRTMIN+3: systemd halts
        assert c.wait_stopped(timeout=30), "systemd did not halt on SIGRTMIN+3"
        c.delete()
        # systemd's last words on a clean halt, in its own journal on the host.
        out = subprocess.run(["journalctl", "-D", str(jdir), "-o", "cat"], capture_output=True, text=True,
                             check=False).stdout
        assert "Reached target" in out and ("System Halt" in out or "Power-Off" in out or "Shutdown" in out)
        assert not (state_dir / c.id).exists(), "poststop removes the hook's state"
    assert realboot.mount_points() == before, "the host's mount table is as before"
    assert jdir.is_dir(), "journal kept by default"
    return {"boot": boot}


def test_boots_on_cgroup_v1(tmp_path: Path) -> None:
    boot_and_halt(tmp_path, cgroup="v1")


def test_boots_on_cgroup_v2_with_cgroupns(tmp_path: Path) -> None:
    boot_and_halt(tmp_path, cgroup="v2", cgroupns=True)


def test_boots_on_cgroup_v2_without_cgroupns(tmp_path: Path) -> None:
    boot_and_halt(tmp_path, cgroup="v2", cgroupns=False)


def test_boots_with_create_runtime_stage(tmp_path: Path) -> None:
    state_dir, journal_root = tmp_path / "hook-state", tmp_path / "journal"
    launcher = write_launcher(tmp_path / "bin")
    with realboot.Container(tmp_path / "c", hooks=hooks(launcher, state_dir, journal_root,
                                                        prestart_stage="createRuntime")) as c:
        c.create()
        c.start()
        word, failed = c.wait_running(timeout=60)
        assert (word, failed.strip()) == ("running", ""), c.console_text() or c.output()
