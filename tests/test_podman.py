"""Podman 4.3 with the hook installed from a hooks.d directory (oci-hooks 1.0.0): podman
passes no stage word and an empty environment, turns prestart into createRuntime (runc
sends status "creating"), and runs poststop itself after delete, with no pid.

The image is imported once into a dedicated podman storage under the image cache
(tests/podmanlib.py); every test removes its containers, whatever the outcome.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from oci_systemd_hook.ids import machine_id_for
from tests.fakecontainer import needs_root
from tests.podmanlib import (
    Podman,
    host_mounts,
    mountinfo_entries,
    podman,
    podman_env,
    recorded_states,
    top_mount,
)

pytestmark = [needs_root, pytest.mark.root, pytest.mark.realboot]
__all__ = ["podman_env"]  # the fixture, used by name below

HALT_WORDS = ("System Halt", "Power-Off", "Shutdown")


def wait_gone(path: Path, timeout: float = 10) -> float:
    """Seconds until `path` disappeared (poststop may run in podman's cleanup process,
    started by conmon, a moment after `podman stop` returns); raises on timeout."""
    start = time.monotonic()
    while path.exists():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{path} still exists {timeout} s after the container was removed")
        time.sleep(0.05)
    return time.monotonic() - start


def host_journal(jdir: Path) -> str:
    return subprocess.run(["journalctl", "-D", str(jdir), "-o", "cat"], capture_output=True, text=True,
                          check=False).stdout


def test_boots_and_halts_with_systemd_false(podman_env: dict[str, object]) -> None:
    pm = podman_env["podman"]
    assert isinstance(pm, Podman)
    state_dir, journal_root = Path(str(podman_env["state_dir"])), Path(str(podman_env["journal_root"]))
    before = host_mounts(Path(str(podman_env["tmp"])))

    cid = pm.run("--systemd=false", "--stop-signal=SIGRTMIN+3").stdout.strip()
    word, failed = pm.wait_running(cid, timeout=30)
    assert (word, failed) == ("running", ""), pm.exec(cid, ["journalctl", "-b", "-p", "warning"], check=False)
    mid = machine_id_for(cid)
    assert pm.exec(cid, ["cat", "/etc/machine-id"]).strip() == mid
    # podman sets container=podman for every container: the hook passes it on to systemd.
    assert pm.exec(cid, ["cat", "/run/host/container-manager"]).strip() == "podman"
    assert (state_dir / cid).is_dir()
    jdir = journal_root / mid
    assert any(p.suffix == ".journal" for p in jdir.iterdir()), list(jdir.iterdir())
    entries = mountinfo_entries(pm.exec(cid, ["cat", "/proc/self/mountinfo"]))
    for path in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
        assert [e["fstype"] for e in entries if e["mountpoint"] == path] == ["tmpfs"], path
    # podman's /run/.containerenv is kept on top of the hook's /run tmpfs.
    assert podman(["exec", cid, "test", "-f", "/run/.containerenv"], check=False).returncode == 0

    start = time.monotonic()
    podman(["stop", "-t", "30", cid], timeout=60)
    stop_seconds = time.monotonic() - start
    assert stop_seconds < 10, f"podman stop took {stop_seconds:.1f} s: systemd did not halt on SIGRTMIN+3"
    assert pm.status(cid) == "exited"
    exit_code = podman(["inspect", "--format", "{{.State.ExitCode}}", cid]).stdout.strip()
    assert exit_code == "0", f"systemd halted with exit code {exit_code}"
    out = host_journal(jdir)
    assert "Reached target" in out and any(w in out for w in HALT_WORDS), out[-2000:]

    podman(["rm", cid])
    # podman's own poststop (no pid, empty environment) removed the hook's state.
    wait_gone(state_dir / cid)
    states = recorded_states(Path(str(podman_env["record"])))
    assert [(s["status"], "pid" in s) for s in states] == [("creating", True), ("stopped", False)], states
    assert host_mounts(Path(str(podman_env["tmp"]))) == before, "the host's mount table is as before"
    assert jdir.is_dir(), "journal kept by default"


def test_systemd_always_is_not_mounted_twice(podman_env: dict[str, object]) -> None:
    """podman --systemd=always mounts /run, /run/lock, /tmp, /var/log/journal itself (listed in
    config.json): the hook leaves them alone and adds only what podman lacks."""
    pm = podman_env["podman"]
    assert isinstance(pm, Podman)
    state_dir, journal_root = Path(str(podman_env["state_dir"])), Path(str(podman_env["journal_root"]))
    before = host_mounts(Path(str(podman_env["tmp"])))
    cid = pm.run("--systemd=always").stdout.strip()
    word, failed = pm.wait_running(cid, timeout=30)
    assert (word, failed) == ("running", ""), pm.exec(cid, ["journalctl", "-b", "-p", "warning"], check=False)
    entries = mountinfo_entries(pm.exec(cid, ["cat", "/proc/self/mountinfo"]))
    for path in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
        assert len([e for e in entries if e["mountpoint"] == path]) == 1, (path, entries)
    # podman's container_uuid (id[:32]) and the hook's choice agree.
    mid = machine_id_for(cid, cid[:32])
    assert pm.exec(cid, ["cat", "/etc/machine-id"]).strip() == mid == cid[:32]
    # /run is podman's tmpfs, so the hook may put /run/host in it; the manager is podman's name.
    assert pm.exec(cid, ["cat", "/run/host/container-manager"]).strip() == "podman"
    # The journal is linked to the host inside podman's /var/log/journal tmpfs.
    jdir = journal_root / mid
    assert any(p.suffix == ".journal" for p in jdir.iterdir())
    # podman binds the host's whole name=systemd hierarchy read-write; the hook stacks the
    # hierarchy read-only on top and only the container's own cgroup read-write.
    top = top_mount(entries, "/sys/fs/cgroup/systemd")
    assert top is not None and top["options"].split(",")[0] == "ro", top
    own = [e for e in entries if e["mountpoint"].startswith("/sys/fs/cgroup/systemd/") and e["fstype"] == "cgroup"]
    assert len(own) == 1 and own[0]["options"].split(",")[0] == "rw", own

    start = time.monotonic()
    podman(["stop", "-t", "30", cid], timeout=60)  # --systemd=always: stop signal SIGRTMIN+3
    assert time.monotonic() - start < 10
    assert podman(["inspect", "--format", "{{.State.ExitCode}}", cid]).stdout.strip() == "0"
    podman(["rm", cid])
    wait_gone(state_dir / cid)
    assert host_mounts(Path(str(podman_env["tmp"]))) == before, "the host's mount table is as before"


def test_disabled_by_env_does_nothing(podman_env: dict[str, object]) -> None:
    """`--env oci-systemd-hook=disabled`: podman runs the hook (it matched /sbin/init), which
    does nothing, and systemd fails exactly as it does under podman --systemd=false without a hook."""
    state_dir, journal_root = Path(str(podman_env["state_dir"])), Path(str(podman_env["journal_root"]))
    record = Path(str(podman_env["record"]))
    pm = podman_env["podman"]
    assert isinstance(pm, Podman)
    no_hooks = Path(str(podman_env["tmp"])) / "no-hooks.d"
    no_hooks.mkdir()
    bare = Podman(no_hooks)  # same image and flags; an empty hooks dir, whatever the host has installed
    try:
        cid = pm.run("--systemd=false", "--env", "oci-systemd-hook=disabled").stdout.strip()
        assert pm.wait_exited(cid, timeout=20), "systemd kept running without the hook's mounts"
        # podman did run the hooks.d entries for this /sbin/init container
        assert [s["status"] for s in recorded_states(record)][:1] == ["creating"]
        without_hook = bare.run("--systemd=false").stdout.strip()
        assert bare.wait_exited(without_hook, timeout=20)
        codes = [podman(["inspect", "--format", "{{.State.ExitCode}}", c]).stdout.strip()
                 for c in (cid, without_hook)]
        assert codes[0] != "0" and codes[0] == codes[1], codes
        assert not state_dir.exists() or not any(state_dir.iterdir()), "no state was created"
        assert not any(journal_root.iterdir()), "no journal directory was created"
    finally:
        bare.close()
    assert bare.leftovers() == []


def test_the_force_on_annotation_reaches_a_wrapper_script(podman_env: dict[str, object]) -> None:
    """PID 1 is a shell script that execs systemd: only the annotation file matches (podman ANDs
    one file's conditions, so the commands file alone could never see the annotation)."""
    pm = podman_env["podman"]
    assert isinstance(pm, Podman)
    state_dir = Path(str(podman_env["state_dir"]))
    cid = pm.run("--systemd=false", "--stop-signal=SIGRTMIN+3", "--annotation", "oci-systemd-hook.enable=true",
                 command=("/bin/sh", "-c", "exec /sbin/init")).stdout.strip()
    word, failed = pm.wait_running(cid, timeout=30)
    assert (word, failed) == ("running", ""), pm.exec(cid, ["journalctl", "-b", "-p", "warning"], check=False)
    assert (state_dir / cid).is_dir()
    podman(["stop", "-t", "30", cid], timeout=60)
    podman(["rm", cid])
    wait_gone(state_dir / cid)
    # Without the annotation the same wrapper gets no hook, and systemd cannot boot.
    cid = pm.run("--systemd=false", command=("/bin/sh", "-c", "exec /sbin/init")).stdout.strip()
    time.sleep(1)
    assert not (state_dir / cid).exists()


def test_both_files_matching_prepare_the_container_once(podman_env: dict[str, object]) -> None:
    pm = podman_env["podman"]
    assert isinstance(pm, Podman)
    state_dir = Path(str(podman_env["state_dir"]))
    cid = pm.run("--systemd=false", "--stop-signal=SIGRTMIN+3", "--annotation",
                 "oci-systemd-hook.enable=true").stdout.strip()
    word, failed = pm.wait_running(cid, timeout=30)
    assert (word, failed) == ("running", "")
    entries = mountinfo_entries(pm.exec(cid, ["cat", "/proc/self/mountinfo"]))
    for path in ("/run", "/run/lock", "/tmp", "/var/log/journal", "/etc/machine-id", "/run/host"):
        assert len([e for e in entries if e["mountpoint"] == path]) == 1, path
    podman(["stop", "-t", "30", cid], timeout=60)
    podman(["rm", cid])
    wait_gone(state_dir / cid)
