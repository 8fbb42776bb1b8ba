"""Prestart and poststop against a real mount namespace (root): what is mounted where, with
which options and owner, and what the host looks like afterwards."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.fakecontainer import FakeContainer, host_mount_table, needs_root, with_export

pytestmark = [needs_root, pytest.mark.root]


def opts(m: object) -> set[str]:
    assert m is not None, "expected a mount there"
    return m.option_set()  # type: ignore[attr-defined,no-any-return]


def test_v1_layout_gets_everything_systemd_needs(tmp_path: Path) -> None:
    before = host_mount_table()
    with FakeContainer(tmp_path, runtime_mounts=[("tmpfs", "/run/secrets"), ("file", "/run/.containerenv")]) as c:
        (c.rootfs / "etc/machine-id").write_text("image's own id\n")
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""
        mid = c.machine_id()

        run = c.mount_at("/run")
        assert run is not None and run.fstype == "tmpfs"
        assert {"nosuid", "nodev", "mode=755", "size=65536k"} <= opts(run)
        lock = c.mount_at("/run/lock")
        assert lock is not None and lock.fstype == "tmpfs" and {"nosuid", "nodev", "noexec"} <= opts(lock)
        tmp = c.mount_at("/tmp")
        assert tmp is not None and tmp.fstype == "tmpfs" and {"nosuid", "nodev"} <= opts(tmp)
        assert stat.S_IMODE(c.inside("/tmp").stat().st_mode) == 0o1777
        assert c.mount_at("/var/log/journal") is not None

        # The runtime's own mounts below /run are still visible, on top of the new tmpfs.
        assert (c.inside("/run/secrets/marker")).read_text() == "from-runtime\n"
        assert (c.inside("/run/.containerenv")).read_text() == "runtime file\n"

        # machine-id: ours, read-only, and the image's file untouched on the host.
        mid_mount = c.mount_at("/etc/machine-id")
        assert mid_mount is not None and "ro" in mid_mount.options.split(",")
        assert c.inside("/etc/machine-id").read_text() == mid + "\n"
        assert (c.rootfs / "etc/machine-id").read_text() == "image's own id\n"

        # systemd's container interface.
        assert c.inside("/run/host/container-manager").read_text() == "oci\n"
        assert c.inside("/run/host/os-release").read_bytes() == Path("/etc/os-release").read_bytes()
        assert c.inside("/run/host/container-uuid").read_text().replace("-", "").strip() == mid
        assert "ro" in c.mount_at("/run/host").options.split(",")  # type: ignore[union-attr]

        # Journal: what the container writes lands in the host directory.
        c.inside(f"/var/log/journal/{mid}/system.journal").write_text("entry")
        assert (c.journal_root / mid / "system.journal").read_text() == "entry"

        # cgroup v1: the hierarchy read-only, the container's own group writable at its full path.
        top = c.mount_at("/sys/fs/cgroup/systemd")
        assert top is not None and top.root == "/" and "ro" in top.options.split(",")
        own = c.mount_at(f"/sys/fs/cgroup/systemd/{c.name}")
        assert own is not None and own.root == f"/{c.name}" and "rw" in own.options.split(",")
        c.inside(f"/sys/fs/cgroup/systemd/{c.name}/init.scope").mkdir()
        assert Path(f"/sys/fs/cgroup/systemd/{c.name}/init.scope").is_dir()
        with pytest.raises(OSError):
            c.inside("/sys/fs/cgroup/systemd/not-mine").mkdir()

        # the one host mount: the container's unix-export tmpfs in its state directory
        assert host_mount_table() == with_export(before, c), "prestart must not change the host's mount table"
        assert (c.state_dir / c.name / "machine-id").read_text() == mid + "\n"

        res = c.poststop()
        assert res.returncode == 0, res.stderr
        assert not (c.state_dir / c.name).exists()
        assert (c.journal_root / mid / "system.journal").exists(), "journal is kept by default"
        assert c.poststop().returncode == 0, "poststop is idempotent"
    assert host_mount_table() == before


def test_poststop_without_prestart_and_journal_removal(tmp_path: Path) -> None:
    with FakeContainer(tmp_path) as c:
        assert c.poststop().returncode == 0
        assert not c.state_dir.exists() or not any(c.state_dir.iterdir())
        res = c.run_hook(args=["--journal=remove"])
        assert res.returncode == 0, res.stderr
        assert (c.journal_root / c.machine_id()).is_dir()
        res = c.run_hook("poststop", c.state(pid=None, status="stopped"), args=["--journal=remove"], env={})
        assert res.returncode == 0, res.stderr
        assert not (c.journal_root / c.machine_id()).exists()
        assert not (c.state_dir / c.name).exists()


def test_annotation_chooses_journal_removal(tmp_path: Path) -> None:
    with FakeContainer(tmp_path, config={"annotations": {"oci-systemd-hook.journal": "remove"}}) as c:
        assert c.run_hook().returncode == 0
        assert (c.journal_root / c.machine_id()).is_dir()
        assert c.poststop().returncode == 0
        assert not (c.journal_root / c.machine_id()).exists()


def test_config_mounts_are_left_alone(tmp_path: Path) -> None:
    """podman --systemd=always already mounts /run, /tmp...: no second mount on top."""
    config = {"mounts": [{"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
                         {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}]}
    with FakeContainer(tmp_path, config=config, runtime_mounts=[("tmpfs", "/run"), ("tmpfs", "/tmp")]) as c:
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert len(c.mounts_at("/run")) == 1 and c.inside("/run/marker").exists()
        assert len(c.mounts_at("/tmp")) == 1
        assert c.mount_at("/run/lock") is not None  # not provided: still ours
        assert c.inside("/run/host/container-manager").exists()  # made inside the runtime's tmpfs


def test_user_namespace_ownership(tmp_path: Path) -> None:
    config = {"linux": {"namespaces": [{"type": "mount"}, {"type": "user"}],
                        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}}
    with FakeContainer(tmp_path, config=config) as c:
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        for path in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
            st = c.inside(path).stat()
            assert (st.st_uid, st.st_gid) == (100000, 100000), path
        jdir = c.journal_root / c.machine_id()
        assert (jdir.stat().st_uid, jdir.stat().st_gid) == (100000, 100000)
        assert c.cgroup_dir is not None
        assert c.cgroup_dir.stat().st_uid == 100000
        assert (c.cgroup_dir / "cgroup.procs").stat().st_uid == 100000
        # Nothing above the container's own cgroup changes hands.
        assert c.cgroup_dir.parent.stat().st_uid == 0
        assert (c.cgroup_dir.parent / "cgroup.procs").stat().st_uid == 0
        assert c.poststop().returncode == 0


def test_read_only_rootfs_with_every_mount_point(tmp_path: Path) -> None:
    with FakeContainer(tmp_path, rootfs_readonly=True) as c:
        (c.rootfs / "var/log/journal").mkdir(exist_ok=True)
        c.stop()
        c.proc = None
        c.start()
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert c.inside("/etc/machine-id").read_text().strip() == c.machine_id()
        assert c.poststop().returncode == 0


def test_cgroup_v2_without_cgroupns(tmp_path: Path) -> None:
    with FakeContainer(tmp_path, cgroup="v2") as c:
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        base = c.mount_at("/sys/fs/cgroup")
        assert base is not None and base.fstype == "cgroup2" and "ro" in base.options.split(",")
        own = c.mount_at(f"/sys/fs/cgroup/{c.name}")
        assert own is not None and own.root == f"/{c.name}" and "rw" in own.options.split(",")
        c.inside(f"/sys/fs/cgroup/{c.name}/init.scope").mkdir()
        assert c.cgroup_dir is not None and (c.cgroup_dir / "init.scope").is_dir()
        with pytest.raises(OSError):
            c.inside("/sys/fs/cgroup/someone-else").mkdir()


def test_cgroup_v2_with_cgroupns(tmp_path: Path) -> None:
    with FakeContainer(tmp_path, cgroup="v2", cgroupns=True) as c:
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        top = c.mount_at("/sys/fs/cgroup")
        assert top is not None and top.root == f"/{c.name}" and "rw" in top.options.split(",")
        c.inside("/sys/fs/cgroup/init.scope").mkdir()
        assert c.cgroup_dir is not None and (c.cgroup_dir / "init.scope").is_dir()


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    with FakeContainer(tmp_path) as c:
        (c.rootfs / "etc/machine-id").unlink()
        os.mkfifo(c.rootfs / "etc/machine-id")
        before = [(m.mountpoint, m.fstype) for m in c.mounts()]
        host_before = host_mount_table()
        res = c.run_hook(timeout=10)
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "machine-id" in lines[0] and "FIFO" in lines[0], res.stderr
        assert "Traceback" not in res.stderr
        assert [(m.mountpoint, m.fstype) for m in c.mounts()] == before
        assert host_mount_table() == host_before
        assert not (c.state_dir / c.name).exists()
        assert list(c.journal_root.iterdir()) == []
        assert c.poststop().returncode == 0


def test_pid_in_hooks_own_namespace_is_refused(tmp_path: Path) -> None:
    with FakeContainer(tmp_path) as c:
        before = host_mount_table()
        res = c.run_hook(state=c.state(pid=os.getpid()))
        assert res.returncode == 2 and "refusing" in res.stderr
        assert host_mount_table() == before
        assert not (c.state_dir / c.name).exists()


def test_disabled_and_non_systemd_do_nothing(tmp_path: Path) -> None:
    for process in ({"args": ["/sbin/init"], "env": ["OCI-SYSTEMD-HOOK=Disabled"]}, {"args": ["/bin/sh"]}):
        with FakeContainer(tmp_path / str(len(process)), config={"process": process}) as c:
            before = [(m.mountpoint, m.fstype) for m in c.mounts()]
            res = c.run_hook()
            assert res.returncode == 0 and res.stderr == ""
            assert [(m.mountpoint, m.fstype) for m in c.mounts()] == before
            assert not c.state_dir.exists()


def test_wrapper_script_forced_on_by_annotation(tmp_path: Path) -> None:
    config = {"process": {"args": ["/usr/local/bin/start.sh"]}, "annotations": {"oci-systemd-hook.enable": "true"}}
    with FakeContainer(tmp_path, config=config) as c:
        assert c.run_hook().returncode == 0
        assert c.mount_at("/run") is not None


def test_tmp_is_half_the_memory_limit(tmp_path: Path) -> None:
    """cgroup v1 memory.limit_in_bytes below RAM: /tmp gets half of it."""
    own = Path("/proc/self/cgroup").read_text().split("\n")
    memory_path = next(line.split(":", 2)[2] for line in own if line.split(":")[1:2] == ["memory"])
    with FakeContainer(tmp_path) as c:
        group = Path("/sys/fs/cgroup/memory") / memory_path.lstrip("/") / c.name
        group.mkdir()
        try:
            (group / "memory.limit_in_bytes").write_text(str(256 << 20))
            (group / "cgroup.procs").write_text(str(c.pid))
            res = c.run_hook()
            assert res.returncode == 0, res.stderr
            assert "size=131072k" in opts(c.mount_at("/tmp"))
        finally:
            c.stop()
            group.rmdir()


def test_poststop_unmounts_what_propagated_to_the_host(tmp_path: Path) -> None:
    """With a shared rootfs (rootfsPropagation: shared), the hook's mounts reach the host too;
    poststop must take them away again."""
    import subprocess

    before = host_mount_table()
    c = FakeContainer(tmp_path, propagation="unchanged")
    rootfs = str(c.rootfs)
    subprocess.run(["mount", "--bind", rootfs, rootfs], check=True)
    try:
        subprocess.run(["mount", "--make-shared", rootfs], check=True)
        with c:
            runtimes = [m for m in host_mount_table() if m[0].startswith(rootfs + "/")]  # the fake runtime's
            res = c.run_hook()
            assert res.returncode == 0, res.stderr
            leaked = [m for m in host_mount_table() if m[0].startswith(rootfs + "/")]
            assert any(m[0] == rootfs + "/run" for m in leaked), "the test needs mounts that propagated"
            res = c.poststop()
            assert res.returncode == 0, res.stderr
            assert [m for m in host_mount_table() if m[0].startswith(rootfs + "/")] == runtimes
    finally:
        subprocess.run(["umount", "-R", rootfs], check=False)
    assert host_mount_table() == before


def test_hook_wired_in_twice_prepares_once(tmp_path: Path) -> None:
    """prestart and createRuntime both configured (or config.json and hooks.d): the second
    run sees the first one's work and adds nothing."""
    with FakeContainer(tmp_path) as c:
        assert c.run_hook("prestart").returncode == 0
        first = sorted((m.mountpoint, m.fstype) for m in c.mounts())
        res = c.run_hook("createRuntime")
        assert res.returncode == 0, res.stderr
        assert sorted((m.mountpoint, m.fstype) for m in c.mounts()) == first
        assert c.poststop().returncode == 0


def test_read_only_image_without_a_journal_directory(tmp_path: Path) -> None:
    """An image on a read-only filesystem that lacks /var/log/journal: the journal is optional,
    so the container is prepared without it (one warning), and nothing is created in the image."""
    c = FakeContainer(tmp_path, rootfs_readonly=True)
    assert not (c.rootfs / "var/log/journal").exists()
    with c:
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert "skipping /var/log/journal" in res.stderr and len(res.stderr.strip().splitlines()) == 2
        assert c.mount_at("/run") is not None and c.mount_at("/etc/machine-id") is not None
        assert c.mount_at("/var/log/journal") is None
        assert not (c.rootfs / "var/log/journal").exists()
        assert c.poststop().returncode == 0


def test_read_only_image_without_tmp_is_refused(tmp_path: Path) -> None:
    c = FakeContainer(tmp_path, rootfs_readonly=True)
    (c.rootfs / "tmp").rmdir()
    with c:
        before = [(m.mountpoint, m.fstype) for m in c.mounts()]
        res = c.run_hook()
        assert res.returncode == 2 and "read-only" in res.stderr and "/tmp" in res.stderr, res.stderr
        assert [(m.mountpoint, m.fstype) for m in c.mounts()] == before
        assert not (c.state_dir / c.name).exists()


def test_poststop_removes_what_prestart_made_and_anything_else(tmp_path: Path) -> None:
    """Poststop removes the state directory by the names the record lists: they are all there
    is after prestart. Anything else in it goes through the generic walk, and a name that leads
    out of the directory is never followed."""
    with FakeContainer(tmp_path) as c:
        assert c.run_hook().returncode == 0
        state = c.state_dir / c.name
        record = json.loads((state / "record.json").read_text())
        present = set()
        for dirpath, dirnames, filenames in os.walk(state):
            rel = os.path.relpath(dirpath, state)
            if rel == "unix-export":  # the container's tmpfs: unmounted before the removal
                dirnames.clear()
                continue
            present |= {os.path.normpath(os.path.join(rel, n)) + "/" for n in dirnames}
            present |= {os.path.normpath(os.path.join(rel, n)) for n in filenames}
        assert present <= set(record["made"]), present - set(record["made"])
        assert record["made"][-3:] == ["host/unix-export/", "host/", "unix-export/"]
        (state / "extra" / "deep").mkdir(parents=True)
        (state / "extra" / "deep" / "file").write_text("x")
        victim = tmp_path / "victim"
        victim.write_text("keep\n")
        record["made"].insert(0, "../../victim")
        (state / "record.json").write_text(json.dumps(record))
        assert c.poststop().returncode == 0
        assert not state.exists()
        assert victim.read_text() == "keep\n"
