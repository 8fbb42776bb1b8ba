"""Copy-up: what the image has in /run, /tmp, /var/log/journal (and /var/lib/systemd on a
read-only root) is copied into the hook's fresh tmpfs: directories, regular files and
symlinks, with owners, modes and times; never a device, a FIFO or a socket, never what a
symlink points at, and never more than the tmpfs holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.fakecontainer import FakeContainer, host_mount_table, needs_root, tree_snapshot

pytestmark = [needs_root, pytest.mark.root]


def seed(rootfs: Path, canary: Path) -> None:
    run = rootfs / "run"
    (run / "lock" / "subsys").mkdir(parents=True, exist_ok=True)
    (run / "seed.conf").write_text("from the image\n")
    os.chown(run / "seed.conf", 1234, 4321)
    os.chmod(run / "seed.conf", 0o640)
    os.utime(run / "seed.conf", (1_000_000_000, 1_000_000_000))
    (run / "lock" / "subsys" / "x").write_text("x")
    os.symlink("seed.conf", run / "link")
    os.symlink(str(canary / "secret"), run / "out")  # a symlink out: copied as a link, never followed
    (rootfs / "tmp" / "keep-me").write_text("tmp content\n")


def test_image_content_is_copied_into_the_new_tmpfs(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "secret").write_text("host secret\n")
    snapshot = tree_snapshot(canary)
    with FakeContainer(tmp_path / "c") as c:
        seed(c.rootfs, canary)
        plan = c.run_hook(args=["--dry-run"])
        assert [line for line in plan.stdout.splitlines() if "copies up the image's content" in line] != []
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        run = c.inside("/run")
        assert c.mount_at("/run").fstype == "tmpfs"  # type: ignore[union-attr]
        st = (run / "seed.conf").lstat()
        assert (run / "seed.conf").read_text() == "from the image\n"
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (1234, 4321, 0o640,
                                                                                       1_000_000_000)
        assert os.readlink(run / "link") == "seed.conf"
        assert os.readlink(run / "out") == str(canary / "secret")
        assert (run / "lock" / "subsys" / "x").read_text() == "x"  # below /run/lock's own tmpfs too
        assert c.mount_at("/run/lock").fstype == "tmpfs"  # type: ignore[union-attr]
        assert (c.inside("/tmp") / "keep-me").read_text() == "tmp content\n"
        assert c.poststop().returncode == 0
    assert tree_snapshot(canary) == snapshot


@pytest.mark.parametrize("how", ["flag", "annotation"])
def test_copy_up_can_be_turned_off(tmp_path: Path, how: str) -> None:
    with FakeContainer(tmp_path / "c") as c:
        seed(c.rootfs, tmp_path)
        if how == "flag":
            res = c.run_hook(args=["--copy-up=false"])
        else:
            res = c.run_hook(state=c.state(annotations={"oci-systemd-hook.copy-up": "false"}))
        assert res.returncode == 0, res.stderr
        assert sorted(p.name for p in c.inside("/run").iterdir()) == ["host", "lock", "systemd"]
        assert not (c.inside("/tmp") / "keep-me").exists()


def test_hostile_content_is_skipped_and_said(tmp_path: Path) -> None:
    host_before = host_mount_table()
    with FakeContainer(tmp_path / "c", config={"annotations": {"oci-systemd-hook.run-size": "1m"}}) as c:
        run = c.rootfs / "run"
        os.mknod(run / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
        os.mkfifo(run / "fifo")
        with open(run / "sparse", "wb") as f:  # 100 GiB that take no space: over the 1m tmpfs
            f.truncate(100 << 30)
        (run / "small").write_text("ok\n")
        deep = run
        for i in range(40):  # deeper than copy-up descends
            deep = deep / f"d{i}"
        deep.mkdir(parents=True)
        many = c.rootfs / "tmp" / "many"
        many.mkdir(parents=True)
        for i in range(10_050):  # more entries than copy-up takes
            (many / str(i)).touch()
        res = c.run_hook(timeout=120)
        assert res.returncode == 0, res.stderr
        inside = c.inside("/run")
        assert (inside / "small").read_text() == "ok\n"
        for name in ("zero", "fifo", "sparse"):
            assert not os.path.lexists(inside / name), name
        assert "copy-up of /run: skipped" in res.stderr and "not a directory, regular file or symlink" in res.stderr
        assert "over what is left of the tmpfs size" in res.stderr and "deeper than 32" in res.stderr
        assert "copy-up of /tmp: skipped" in res.stderr and "more than 10000 entries" in res.stderr
        assert len(os.listdir(c.inside("/tmp") / "many")) <= 10_000
        assert c.poststop().returncode == 0
    assert host_mount_table() == host_before


def test_a_runtime_volume_below_run_is_not_read(tmp_path: Path) -> None:
    """/run/data is the runtime's bind of a host directory: copy-up leaves it alone (it is kept on
    top of the new tmpfs anyway), and never lists, opens or copies what is in it."""
    with FakeContainer(tmp_path / "c", runtime_mounts=[("volume", "/run/data")]) as c:
        volume = c.volume("/run/data")
        os.mkfifo(volume / "fifo")
        (volume / "file").write_text("host data\n")
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert "fifo" not in res.stderr, "copy-up looked into the volume"
        assert (c.inside("/run/data") / "file").read_text() == "host data\n"  # the volume, kept on top
        assert c.poststop().returncode == 0


def test_copy_up_is_capped_whatever_the_tmpfs_size() -> None:
    from oci_systemd_hook.plan import COPY_UP_MAX
    from tests.test_plan import make_facts, plan_for

    plan = plan_for(facts=make_facts(ram=64 << 30))  # /tmp's tmpfs would be 32 GiB
    assert {m.target: m.copy_up for m in plan.mounts if m.copy_up} == {
        "/run": COPY_UP_MAX, "/run/lock": COPY_UP_MAX, "/tmp": COPY_UP_MAX, "/var/log/journal": COPY_UP_MAX}


def test_modes_set_id_bits_owners_and_directory_times_are_the_images(tmp_path: Path) -> None:
    """Each entry is created with its final mode (the umask does not apply), set-id bits survive
    the chown that would clear them, a set-group-ID directory passes its group on as it does in
    the image, and a directory keeps its time although its content was copied in after it."""
    with FakeContainer(tmp_path / "c") as c:
        run = c.rootfs / "run"
        entries = {  # name: (kind, mode, uid, gid)
            "shared": ("dir", 0o2775, 0, 4321),
            "shared/inherits": ("file", 0o664, 1234, 4321),
            "shared/sub": ("dir", 0o2750, 1234, 4321),
            "shared/not-sgid": ("dir", 0o755, 0, 4321),
            "plain": ("dir", 0o700, 1234, 1234),
            "plain/suid": ("file", 0o4755, 1234, 1234),
            "plain/sgid-root": ("file", 0o2711, 0, 0),
            "sticky": ("dir", 0o1777, 0, 0),
            "sticky/inner": ("dir", 0o755, 0, 0),
            "odd": ("file", 0o1604, 0, 0),
        }
        for name, (kind, *_) in entries.items():
            if kind == "dir":
                (run / name).mkdir()
            else:
                (run / name).write_text(name)
        for name, (_, mode, uid, gid) in sorted(entries.items(), key=lambda e: -e[0].count("/")):
            os.chown(run / name, uid, gid)
            os.chmod(run / name, mode)
            os.utime(run / name, (1_100_000_000, 1_200_000_000))
        res = c.run_hook(env={"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""})
        assert res.returncode == 0 and res.stderr == "", res.stderr
        inside = c.inside("/run")
        for name, (kind, mode, uid, gid) in entries.items():
            st = (inside / name).lstat()
            got = ("dir" if stat.S_ISDIR(st.st_mode) else "file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            assert got == (kind, mode, uid, gid), name
            assert int(st.st_mtime) == 1_200_000_000, name
            if kind == "file":
                assert (inside / name).read_text() == name
        assert c.poststop().returncode == 0
