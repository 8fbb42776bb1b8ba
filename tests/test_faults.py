"""Faults: a kernel or host step fails (or the hook dies) half-way through prestart.

Whatever fails, prestart must undo what it did before reporting one clear line: the
container's mount table exactly as before, no state directory, no journal directory,
the host's mounts untouched. A following poststop succeeds, and so does a normal
prestart on the same container. A prestart that is killed (SIGKILL: no rollback at all)
leaves its record behind, and poststop cleans up from it.

Failures are injected two ways: env OCI_SYSTEMD_HOOK_FAIL_AT=<step> (apply.py's test hook,
first occurrence of a step), and a `python -c` wrapper that patches one function of
oci_systemd_hook.linux to fail before, or SIGKILL the hook after, its n-th call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from oci_systemd_hook import registry
from oci_systemd_hook.hostfacts import parse_mountinfo
from oci_systemd_hook.ids import machine_id_for
from tests.fakecontainer import USERNS, FakeContainer, container_table, host_table, needs_root, with_export

pytestmark = [needs_root, pytest.mark.root]

QUIET = {"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}
#: The runtime's own mounts below /run: the tmpfs path clones them and re-attaches them on top.
RUNTIME_MOUNTS = [("tmpfs", "/run/secrets"), ("file", "/run/.containerenv")]
STEPS = ["mkdir", "write", "chown", "open_tree", "mount_setattr", "setns", "fsmount", "move_mount", "symlink"]

def one_line(stderr: str, *needles: str) -> str:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got {stderr!r}"
    assert lines[0].startswith("oci-systemd-hook:"), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_rolled_back(c: FakeContainer, before: list[tuple[str, str, str, str, str]],
                       host_before: list[tuple[str, str, str, str]]) -> None:
    assert container_table(c) == before, "something is left half-mounted in the container"
    assert host_table(c.tmp) == host_before, "the host's mount table changed"
    assert not (c.state_dir / c.name).exists(), "the state directory was left behind"
    assert not c.state_dir.exists() or list(c.state_dir.iterdir()) == []
    assert list(c.journal_root.iterdir()) == [], "a journal directory was left behind"


def then_recovers(c: FakeContainer) -> None:
    """After a failed prestart: poststop is fine, and a normal prestart then works."""
    stop = c.poststop()
    assert stop.returncode == 0, stop.stderr
    assert stop.stderr == ""
    res = c.run_hook()
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    run = c.mount_at("/run")
    assert run is not None and run.fstype == "tmpfs"
    assert c.inside("/etc/machine-id").read_text() == c.machine_id() + "\n"
    if ("tmpfs", "/run/secrets") in c.runtime_mounts:
        assert c.inside("/run/secrets/marker").read_text() == "from-runtime\n"
        assert c.inside("/run/.containerenv").read_text() == "runtime file\n"
    assert (c.journal_root / c.machine_id()).is_dir()
    assert c.poststop().returncode == 0
    assert not (c.state_dir / c.name).exists()


# --- OCI_SYSTEMD_HOOK_FAIL_AT ------------------------------------------------------------------------

@pytest.mark.parametrize("step", STEPS)
def test_injected_failure_rolls_back(tmp_path: Path, step: str) -> None:
    config = USERNS if step == "chown" else None  # chown-cgroup only happens for a user namespace
    with FakeContainer(tmp_path, config=config, runtime_mounts=RUNTIME_MOUNTS) as c:
        before, host_before = container_table(c), host_table(c.tmp)
        res = c.run_hook(env={**QUIET, "OCI_SYSTEMD_HOOK_FAIL_AT": step})
        assert res.returncode == 1, res.stderr
        one_line(res.stderr, "prestart failed", f"{step}: injected failure", c.name[:12])
        assert_rolled_back(c, before, host_before)
        then_recovers(c)


def test_every_step_name_is_reached() -> None:
    """The fault hook's step names match what apply.py calls (a renamed step would test nothing)."""
    source = (Path(__file__).resolve().parent.parent / "oci_systemd_hook" / "apply.py").read_text()
    for step in STEPS:
        assert f'_fault("{step}")' in source, step


def test_failure_in_the_middle_from_the_image(tmp_path: Path) -> None:
    """/run (with kept runtime mounts re-attached), /run/lock and /tmp are mounted when
    /var/log/journal turns out to be a FIFO: all of it comes off again."""
    with FakeContainer(tmp_path, runtime_mounts=RUNTIME_MOUNTS) as c:
        (c.rootfs / "var/log/journal").parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(c.rootfs / "var/log/journal")
        before, host_before = container_table(c), host_table(c.tmp)
        res = c.run_hook(timeout=10)
        assert res.returncode == 2, res.stderr
        one_line(res.stderr, "/var/log/journal", "FIFO")
        assert_rolled_back(c, before, host_before)
        assert c.inside("/run/secrets/marker").read_text() == "from-runtime\n"
        (c.rootfs / "var/log/journal").unlink()
        then_recovers(c)


# --- a wrapper that fails or kills the hook at the n-th call of a kernel function ---------------------

WRAPPER = r"""
import errno, os, signal, sys
from oci_systemd_hook import linux

mode, name, n = os.environ["T_MODE"], os.environ["T_FUNC"], int(os.environ["T_N"])
calls = 0
original = getattr(linux, name)


def patched(*args, **kwargs):
    global calls
    calls += 1
    if calls == n and mode == "fail":
        raise OSError(errno.EIO, f"{name} #{n}: injected failure")
    result = original(*args, **kwargs)
    if calls == n and mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return result


setattr(linux, name, patched)
from oci_systemd_hook.cli import main

try:
    code = main(sys.argv[1:])
finally:
    sys.stdout.write(f"calls={calls}\n")
sys.exit(code)
"""


def run_wrapped(c: FakeContainer, mode: str, func: str, n: int,
                args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-I", "-c", WRAPPER, "prestart", *c.hook_args(), *(args or [])]
    env = {**QUIET, "T_MODE": mode, "T_FUNC": func, "T_N": str(n)}
    return subprocess.run(argv, input=json.dumps(c.state()), capture_output=True, text=True, env=env,
                          timeout=30, check=False)


#: attach() calls of a full prestart with RUNTIME_MOUNTS on cgroup v1: /run, its two kept runtime
#: mounts, /run/lock, /tmp, /var/log/journal, /run/host, /etc/machine-id, the journal bind, the
#: name=systemd hierarchy and the container's own cgroup.
ATTACHES = 13  # with /run/host/unix-export (its tmpfs on the host is the first)


def test_attach_count(tmp_path: Path) -> None:
    with FakeContainer(tmp_path, runtime_mounts=RUNTIME_MOUNTS) as c:
        res = run_wrapped(c, "fail", "attach", 10**6)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"calls={ATTACHES}"


@pytest.mark.parametrize("n", range(1, ATTACHES + 1))
def test_nth_attach_fails(tmp_path: Path, n: int) -> None:
    """Every point of the mount sequence, including between a tmpfs and its kept submounts."""
    with FakeContainer(tmp_path, runtime_mounts=RUNTIME_MOUNTS) as c:
        before, host_before = container_table(c), host_table(c.tmp)
        res = run_wrapped(c, "fail", "attach", n)
        assert res.returncode == 1, res.stderr
        assert res.stdout.strip() == f"calls={n}"
        one_line(res.stderr, "prestart failed", f"attach #{n}: injected failure")
        assert_rolled_back(c, before, host_before)
        assert c.inside("/run/secrets/marker").read_text() == "from-runtime\n"
        then_recovers(c)


@pytest.mark.parametrize(("func", "n"), [("clone_tree", 2), ("new_tmpfs", 3), ("set_flags", 2)])
def test_other_calls_fail_later(tmp_path: Path, func: str, n: int) -> None:
    with FakeContainer(tmp_path, runtime_mounts=RUNTIME_MOUNTS) as c:
        before, host_before = container_table(c), host_table(c.tmp)
        res = run_wrapped(c, "fail", func, n)
        assert res.returncode == 1, res.stderr
        one_line(res.stderr, "prestart failed", f"{func} #{n}: injected failure")
        assert_rolled_back(c, before, host_before)
        then_recovers(c)


# --- a prestart that dies: poststop cleans up after it ---------------------------------------------

@pytest.mark.parametrize(("func", "n"), [("clone_tree", 1), ("setns", 1), ("attach", 1), ("attach", 2),
                                         ("attach", 7), ("attach", ATTACHES)])
def test_poststop_after_a_killed_prestart(tmp_path: Path, func: str, n: int) -> None:
    with FakeContainer(tmp_path, runtime_mounts=RUNTIME_MOUNTS) as c:
        host_before = host_table(c.tmp)
        res = run_wrapped(c, "kill", func, n, args=["--journal=remove"])
        assert res.returncode == -signal.SIGKILL, res.stderr
        state = c.state_dir / c.name
        record = json.loads((state / "record.json").read_text())
        assert record["id"] == c.name and record["journal_mode"] == "remove"
        # the first attach is the unix-export tmpfs, before the journal is linked
        assert (c.journal_root / c.machine_id()).is_dir() == ((func, n) != ("attach", 1))
        # Nothing reached the host's namespace, even with no rollback at all, but the container's
        # unix-export tmpfs in the state directory (the first attach, killed right after it).
        assert host_table(c.tmp) == with_export(host_before, c)

        stop = c.poststop()  # like podman: no pid, empty environment, no arguments
        assert stop.returncode == 0, stop.stderr
        assert stop.stderr == ""
        assert not state.exists()
        assert list(c.journal_root.iterdir()) == [], "journal_mode=remove comes from the record"
        assert host_table(c.tmp) == host_before
        assert c.poststop().returncode == 0


def _record(c: FakeContainer, **extra: object) -> dict[str, object]:
    """A record as apply.Record writes it."""
    mid = machine_id_for(c.name)
    rootfs = str(c.rootfs)
    record: dict[str, object] = {
        "id": c.name, "bundle": str(c.bundle), "pid": c.pid, "rootfs": rootfs, "machine_id": mid,
        "journal_root": str(c.journal_root), "journal": mid, "journal_created": True, "journal_mode": "keep",
        "planned": [rootfs + t for t in ("/run", "/run/lock", "/tmp", "/var/log/journal", "/run/host",
                                         "/etc/machine-id", f"/var/log/journal/{mid}")],
        "mounted": [rootfs + "/run", rootfs + "/run/secrets"], "propagated": [], "complete": True,
    }
    record.update(extra)
    return record


def _write_state(c: FakeContainer, record: bytes) -> Path:
    state = c.state_dir / c.name
    (state / "host").mkdir(parents=True)
    (state / "host" / "container-manager").write_text("oci\n")
    (state / "machine-id").write_text(machine_id_for(c.name) + "\n")
    (state / "record.json").write_bytes(record)
    (state / "record.json.tmp").write_bytes(record[: len(record) // 2])  # a write cut short
    return state


@pytest.mark.parametrize("kind", ["record", "corrupt-record", "empty-record", "record-not-object"])
def test_poststop_after_a_simulated_crash(tmp_path: Path, kind: str) -> None:
    with FakeContainer(tmp_path) as c:
        mid = machine_id_for(c.name)
        registry.claim_journal(str(c.journal_root), mid, c.name, 0o755, None, None)
        data = {"record": json.dumps(_record(c, journal_mode="remove")).encode(), "corrupt-record": b'{"id": ',
                "empty-record": b"", "record-not-object": b"[1, 2]"}[kind]
        state = _write_state(c, data)
        host_before = host_table(c.tmp)
        stop = c.poststop()
        assert stop.returncode == 0, stop.stderr
        assert not state.exists()
        # With a record its journal_mode decides; without one the default (keep) does.
        assert (c.journal_root / mid).exists() == (kind != "record")
        assert host_table(c.tmp) == host_before


def _mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "leftover", str(path)], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _mount_id(path: Path) -> int:
    found = [m.mount_id for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())
             if m.mountpoint == str(path)]
    return found[-1]


def test_poststop_unmounts_recorded_propagated_mounts_only(tmp_path: Path) -> None:
    """Mounts that propagated to the host (rootfsPropagation=shared) are taken off by their
    recorded identity: never one outside the rootfs, never one whose id is not the recorded one."""
    with FakeContainer(tmp_path) as c:
        inside, outside, other = c.rootfs / "run", tmp_path / "outside", c.rootfs / "tmp"
        host_before = host_table(c.tmp)
        for p in (inside, outside, other):
            _mount_tmpfs(p)
        try:
            host_run = _mount_id(Path("/run")) if any(m[0] == "/run" for m in host_table(c.tmp)) else 1
            record = _record(c, propagated=[[_mount_id(inside), str(inside), "tmpfs"],
                                            [_mount_id(outside), str(outside), "tmpfs"],
                                            [_mount_id(other) + 100000, str(other), "tmpfs"],
                                            [host_run, "/run", "tmpfs"]])
            state = _write_state(c, json.dumps(record).encode())
            stop = c.poststop()
            assert stop.returncode == 0, stop.stderr
            assert not state.exists()
            table = host_table(c.tmp)
            assert not any(m[0] == str(inside) for m in table), "the recorded mount below the rootfs is still there"
            assert any(m[0] == str(outside) for m in table), "poststop unmounted something outside the rootfs"
            assert any(m[0] == str(other) for m in table), "poststop unmounted a mount it did not record"
        finally:
            for p in (inside, outside, other):
                _umount(p)
        assert host_table(c.tmp) == host_before


def test_poststop_after_a_killed_prestart_takes_off_only_new_mounts(tmp_path: Path) -> None:
    """No `propagated` list (killed before writing it): what appeared below the rootfs since
    the recorded `host_before` is the hook's; a mount that was there before is not."""
    with FakeContainer(tmp_path) as c:
        old, new, elsewhere = c.rootfs / "tmp", c.rootfs / "run", c.rootfs / "srv"
        host_before = host_table(c.tmp)
        _mount_tmpfs(old)
        try:
            ids = [m.mount_id for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())]
            _mount_tmpfs(new)
            _mount_tmpfs(elsewhere)  # new too, but where the hook never mounts: someone else's
            record = _record(c, complete=False, host_before=ids, propagated=[])
            state = _write_state(c, json.dumps(record).encode())
            assert c.poststop().returncode == 0
            assert not state.exists()
            table = host_table(c.tmp)
            assert not any(m[0] == str(new) for m in table)
            assert any(m[0] == str(old) for m in table), "a mount that predates the prestart was taken off"
            assert any(m[0] == str(elsewhere) for m in table), "a mount the hook never planned was taken off"
        finally:
            _umount(old)
            _umount(new)
            _umount(elsewhere)
        assert host_table(c.tmp) == host_before
