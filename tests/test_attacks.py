"""A tenant attacks the host through the hook, with real runc containers of the cached image.

Each test stages one class of attack the way a tenant could (a command run as container root,
`container_uuid=` or an annotation in its config, a second runtime with the same id, a rootfs
the host prepared) and asserts what the host looks like afterwards. The namespace harness
(tests/test_hostile.py, tests/test_attacks_ns.py) covers what needs a hostile image.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oci_systemd_hook.ids import machine_id_for
from tests import realboot
from tests.fakecontainer import needs_root
from tests.hookwiring import hooks, write_launcher

pytestmark = [needs_root, pytest.mark.root, pytest.mark.realboot]

NOBODY = 65534


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Path]:
    """A directory every host user can traverse (pytest's tmp dirs are 0700): a journal root
    there is reachable by an unprivileged user exactly as /var/log/journal is."""
    base = Path(tempfile.mkdtemp(prefix="osh-attack-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Hook:
    """The hook wired into containers: launcher, state dir and journal root of one test."""

    def __init__(self, tmp_path: Path, journal_root: Path | None = None) -> None:
        self.tmp = tmp_path
        self.state_dir = tmp_path / "hook-state"
        self.journal_root = journal_root or tmp_path / "journal"
        self.journal_root.mkdir(parents=True, exist_ok=True)
        self.journal_root.chmod(0o2755)
        self.launcher = write_launcher(tmp_path / "bin")

    def hooks(self, *extra: str) -> dict[str, Any]:
        return hooks(self.launcher, self.state_dir, self.journal_root, *extra)

    def container(self, name: str, *extra: str, **kwargs: Any) -> realboot.Container:
        return realboot.Container(self.tmp / name, hooks=self.hooks(*extra), **kwargs)


def boot(c: realboot.Container) -> None:
    c.create()
    c.start()
    word, failed = c.wait_running(timeout=60)
    assert (word, failed.strip()) == ("running", ""), c.console_text() or c.output()


def halt(c: realboot.Container) -> None:
    c.kill(realboot.SIGRTMIN_3)
    assert c.wait_stopped(timeout=30)
    c.delete()


def tree(path: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry below `path` (and itself): mode, owner, inode and file content."""
    out: dict[str, tuple[int, int, int, bytes]] = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(p.relative_to(path))] = (st.st_mode, st.st_uid, st.st_ino, data)
    return out


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """Run as an unprivileged host user. (Not setpriv: it still holds its capabilities when it execs.)"""
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=30, user=NOBODY, group=NOBODY,
                              extra_groups=[], cwd="/")
    except PermissionError as exc:
        return subprocess.CompletedProcess(list(args), 126, "", f"{exc.strerror}")


# --- 1. no escalation through the writable journal directory -------------------------------------

def test_setuid_shell_and_device_in_the_journal_are_out_of_host_users_reach(tmp_path: Path, world: Path) -> None:
    h = Hook(tmp_path, world / "journal")
    with h.container("c") as c:
        boot(c)
        mid = machine_id_for(c.id)
        jdir = f"/var/log/journal/{mid}"
        # Container root plants a setuid-root shell and a device node in its journal directory.
        c.exec(["sh", "-c", f"cp /bin/sh {jdir}/sh && chmod 4755 {jdir}/sh && mknod {jdir}/mem c 1 1 "
                            f"&& chmod 666 {jdir}/mem && chmod 777 {jdir}"])
        data = h.journal_root / ".oci-systemd-hook" / mid
        planted = data / "sh"
        assert planted.stat().st_mode & 0o7777 == 0o4755 and planted.stat().st_uid == 0, "the attack was staged"
        assert stat.S_ISCHR((data / "mem").stat().st_mode)
        store = (h.journal_root / ".oci-systemd-hook").stat()
        assert (store.st_uid, store.st_mode & 0o777) == (0, 0o700)
        # An unprivileged host user can reach neither, by the link journalctl uses or by the store.
        for path in (h.journal_root / mid / "sh", planted):
            res = as_nobody(str(path), "-c", "id -u")
            assert res.returncode != 0 and "Permission denied" in res.stderr, (path, res)
        for path in (h.journal_root / mid / "mem", data / "mem"):
            res = as_nobody("dd", f"if={path}", "of=/dev/null", "bs=1", "count=1")
            assert res.returncode != 0 and "Permission denied" in res.stderr, (path, res)
        res = as_nobody("ls", str(h.journal_root / mid) + "/")
        assert res.returncode != 0
        # Root still reads the journal through the link, with journalctl -D and over the whole root.
        c.exec(["logger", "-t", "osh-attack", "still readable"])
        c.exec(["journalctl", "--sync"], check=False)
        for args in (["-D", str(h.journal_root / mid)], ["-D", str(h.journal_root)]):
            out = subprocess.run(["journalctl", *args, "-t", "osh-attack", "-o", "cat"], capture_output=True,
                                 text=True, check=False).stdout
            assert "still readable" in out, args
        halt(c)


# --- 2. journal directories belong to the container they were made for ---------------------------

def host_like_journal(root: Path, mid: str) -> Path:
    """A journal directory that is not the hook's: the host's own, or another manager's."""
    d = root / mid
    d.mkdir()
    (d / "system.journal").write_bytes(b"LPKSHHRH" + b"\0" * 56)
    d.chmod(0o2755)
    return d


def test_container_uuid_cannot_take_the_hosts_journal(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    host_mid = Path("/etc/machine-id").read_text().strip()
    victim = host_like_journal(h.journal_root, host_mid)
    before = tree(victim)
    with h.container("c", "--journal=remove", env=[f"container_uuid={host_mid}"]) as c:
        boot(c)
        mid = c.exec(["cat", "/etc/machine-id"]).strip()
        assert mid != host_mid and mid == machine_id_for(c.id), "the host's machine id is not honoured"
        assert tree(victim) == before
        assert (h.journal_root / mid).is_symlink()
        halt(c)
    assert tree(victim) == before, "chmod, chown or removal of a journal the hook did not make"
    assert not (h.journal_root / machine_id_for(c.id)).exists(), "its own journal is removed (journal=remove)"


def test_container_uuid_cannot_take_a_live_containers_machine_id_or_journal(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    with h.container("a") as a:
        boot(a)
        mid_a = machine_id_for(a.id)
        before = tree(h.journal_root / ".oci-systemd-hook" / mid_a)
        with h.container("b", "--journal=remove", env=[f"container_uuid={mid_a}"]) as b:
            boot(b)
            assert b.exec(["cat", "/etc/machine-id"]).strip() == machine_id_for(b.id)
            halt(b)
        # B's poststop removed its own journal only.
        assert not (h.journal_root / machine_id_for(b.id)).exists()
        assert (h.journal_root / mid_a).is_dir()
        now = tree(h.journal_root / ".oci-systemd-hook" / mid_a)
        assert {k: v[:3] for k, v in now.items() if k == "."} == {k: v[:3] for k, v in before.items() if k == "."}
        assert a.exec(["cat", "/etc/machine-id"]).strip() == mid_a
        halt(a)
    # A dead container's journal, claimed by uuid later, is not handed over either.
    with h.container("c", "--journal=remove", env=[f"container_uuid={mid_a}"]) as c:
        boot(c)
        assert c.exec(["cat", "/etc/machine-id"]).strip() == machine_id_for(c.id)
        halt(c)
    assert (h.journal_root / mid_a).is_dir()


def test_a_journal_directory_the_hook_did_not_make_is_never_used_or_removed(tmp_path: Path) -> None:
    """Even at the container's own id: a directory already there is someone else's."""
    h = Hook(tmp_path)
    cid = "e0" * 32
    victim = host_like_journal(h.journal_root, machine_id_for(cid))
    before = tree(victim)
    with h.container("c", "--journal=remove", container_id=cid) as c:
        boot(c)
        assert c.exec(["cat", "/etc/machine-id"]).strip() == machine_id_for(cid)
        mid = machine_id_for(cid)
        res = c.exec_result(["findmnt", f"/var/log/journal/{mid}"])
        assert res.returncode != 0, "nothing of the host's is bound in"
        halt(c)
    assert tree(victim) == before


def test_a_restarted_container_reuses_its_own_journal(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    cid = "restart-me"
    inodes = []
    for n in range(2):
        with h.container(f"c{n}", container_id=cid) as c:
            boot(c)
            c.exec(["logger", "-t", "osh-restart", f"boot {n}"])
            c.exec(["journalctl", "--sync"], check=False)
            inodes.append((h.journal_root / machine_id_for(cid)).stat().st_ino)
            halt(c)
    assert inodes[0] == inodes[1]
    out = subprocess.run(["journalctl", "-D", str(h.journal_root / machine_id_for(cid)), "-t", "osh-restart",
                          "-o", "cat"], capture_output=True, text=True, check=False).stdout
    assert "boot 0" in out and "boot 1" in out


# --- 3. poststop unmounts what the hook made, and nothing else --------------------------------------

def test_chroot_style_root_keeps_the_hosts_own_mounts(tmp_path: Path) -> None:
    """The host mounted tmpfs at R/run, R/run/secrets and R/tmp itself: they are the host's."""
    h = Hook(tmp_path)
    with h.container("c") as c:
        own = [c.rootfs / "run", c.rootfs / "run" / "secrets", c.rootfs / "tmp"]
        try:
            for p in own:
                p.mkdir(exist_ok=True)
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "host-own", str(p)], check=True)
            (c.rootfs / "run" / "secrets" / "token").write_text("host secret\n")
            before = [line for line in realboot.mountinfo("self") if "host-own" in line]
            assert len(before) == 3
            boot(c)
            assert c.exec(["cat", "/run/secrets/token"]) == "host secret\n", "the kept submount"
            assert c.exec(["cat", "/run/host/container-manager"]) == "oci\n", "the hook's tmpfs is on top"
            halt(c)
            after = [line for line in realboot.mountinfo("self") if "host-own" in line]
            assert after == before, "poststop took off the host's own mounts"
        finally:
            for p in reversed(own):
                subprocess.run(["umount", "-l", str(p)], check=False)


def private_namespace() -> subprocess.Popen[str]:
    """A mount namespace of its own, standing in for the host (so a failure cannot hurt this one)."""
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               "echo ready && exec sleep infinity"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    return holder


def test_root_path_slash_leaves_the_hosts_mounts_alone(tmp_path: Path) -> None:
    """root.path "/" (the host's own root): poststop must not detach the host's /run or cgroups."""
    h = Hook(tmp_path)
    holder = private_namespace()
    ns = ["nsenter", "-t", str(holder.pid), "-m", "--"]
    try:
        subprocess.run([*ns, "mount", "-t", "tmpfs", "-o", "size=1m", "host-run", "/run"], check=True)
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": "/", "readonly": False}
        config["process"].update(terminal=False, args=["sleep", "1000"])
        config["process"].pop("rlimits", None)
        # runc cannot mount cgroups into the host's own /sys/fs/cgroup: the container keeps the host's view.
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        config["annotations"] = {"oci-systemd-hook.enable": "true"}
        config["hooks"] = h.hooks()
        (bundle / "config.json").write_text(json.dumps(config))

        def table() -> list[str]:
            return sorted(" ".join(line.split()[:5]) for line in realboot.mountinfo(holder.pid))

        before = table()
        runc = [*ns, "runc", "--root", str(tmp_path / "runc")]
        cid = "slash-root"
        # runc runs the prestart hooks, then cannot pivot_root into "/" and destroys the container,
        # which runs the poststop hooks.
        res = subprocess.run([*runc, "create", "--bundle", str(bundle), cid], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
        assert "pivot_root" in res.stderr, res.stderr
        subprocess.run([*runc, "delete", "--force", cid], capture_output=True, text=True, timeout=60)
        assert table() == before, "poststop unmounted something of the host's"
        assert not (h.state_dir / cid).exists()
    finally:
        holder.kill()
        holder.wait()


def test_shared_rootfs_propagation_leaves_nothing_of_the_hook_on_the_host(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    with h.container("c") as c:
        subprocess.run(["mount", "--make-shared", str(c.rootfs)], check=True)
        c.config["linux"]["rootfsPropagation"] = "rshared"
        below = str(c.rootfs) + "/"
        before = [p for p in realboot.mount_points() if p.startswith(below)]
        boot(c)
        halt(c)
        after = [p for p in realboot.mount_points() if p.startswith(below)]
        assert after == before, f"left on the host: {sorted(set(after) - set(before))}"


# --- 4. targets lie on the container's own root or in a tmpfs of the hook --------------------------

def volume(tmp_path: Path, name: str, shared: bool = False) -> Path:
    """A host directory for a config.json bind; `shared`: on a shared mount, as on a systemd host,
    so that whatever is mounted on the bind inside the container appears on the host too."""
    if shared:
        holder = tmp_path / "shared-mount"
        holder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "shared-volume", str(holder)], check=True)
        subprocess.run(["mount", "--make-shared", str(holder)], check=True)
        d = holder / name
    else:
        d = tmp_path / name
    d.mkdir()
    return d


def unmount_volume(tmp_path: Path) -> None:
    subprocess.run(["umount", "-R", "-l", str(tmp_path / "shared-mount")], check=False, capture_output=True)


def test_tmpfs_with_rbind_options_is_a_host_directory(tmp_path: Path) -> None:
    """runc treats `type: tmpfs` with rbind as a bind of the source: nothing may be created there."""
    h = Hook(tmp_path)
    host_dir = volume(tmp_path, "hostdir")
    with h.container("c") as c:
        c.config["mounts"].append({"destination": "/run", "type": "tmpfs", "source": str(host_dir),
                                   "options": ["rbind", "rw"]})
        c.create(check=False)
        assert list(host_dir.iterdir()) == [], "the hook created files in the host directory"
        assert host_dir.stat().st_uid == 0 and host_dir.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
@pytest.mark.parametrize(("link", "target"), [("/run", "/data"), ("/var/log", "/data"), ("/tmp", "/data"),
                                              ("/var/log/journal", "/data")])
def test_image_symlinks_into_a_volume(tmp_path: Path, link: str, target: str, shared: bool) -> None:
    """Nothing is created in the volume, nothing is mounted on it, and (with a shared host mount,
    where a mount on the bind would propagate to the host) nothing is left on the host."""
    h = Hook(tmp_path)
    host_dir = volume(tmp_path, "data", shared)
    try:
        with h.container("c") as c:
            subprocess.run(["rm", "-rf", str(c.rootfs) + link], check=True)
            os.symlink(target, str(c.rootfs) + link)
            c.config["mounts"].append({"destination": target, "type": "bind", "source": str(host_dir),
                                       "options": ["rbind", "rw"]})
            c.config["linux"]["rootfsPropagation"] = "rshared"
            res = c.create(check=False)
            assert list(host_dir.iterdir()) == [], "the hook wrote into the volume"
            assert [p for p in realboot.mount_points() if p.startswith(str(host_dir))] == []
            if res.returncode == 0:  # the hook skipped what led into the volume (the journal)
                c.start()
                c.wait_running(timeout=60)
                halt(c)
            else:
                assert "oci-systemd-hook" in c.output() and "refusing" in c.output(), c.output()
        assert [p for p in realboot.mount_points() if p.startswith(str(host_dir))] == []
        assert [p for p in realboot.mount_points() if p.startswith(str(tmp_path / "c"))] == []
    finally:
        unmount_volume(tmp_path)


def test_readonly_root_with_a_var_lib_volume(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    host_dir = volume(tmp_path, "varlib")
    with h.container("c", readonly=True) as c:
        c.config["mounts"].append({"destination": "/var/lib", "type": "bind", "source": str(host_dir),
                                   "options": ["rbind", "rw"]})
        c.create(check=False)
        assert list(host_dir.iterdir()) == [], "the hook created systemd/ in the volume"


# --- 8. one container's hook never touches another's state -----------------------------------------

def test_same_id_in_two_runtimes(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    cid = "twin"
    with h.container("a", container_id=cid) as a:
        boot(a)
        state = h.state_dir / cid
        before = {p.name: p.read_bytes() for p in state.rglob("*") if p.is_file() and p.name != "record.json"}
        record = json.loads((state / "record.json").read_text())
        with h.container("b", container_id=cid, env=["container_uuid=" + "ab" * 16]) as b:
            res = b.create(check=False)
            assert res.returncode != 0
            assert "in use by a live container" in b.output(), b.output()
            # And B's poststop, run for B's bundle, leaves A's state alone.
            state_json = json.dumps({"ociVersion": "1.0.2", "id": cid, "status": "stopped",
                                     "bundle": str(b.bundle)})
            subprocess.run([str(h.launcher), "poststop", f"--state-dir={h.state_dir}",
                            f"--journal-root={h.journal_root}", "--journal=remove"], input=state_json, text=True,
                           check=True)
        assert {p.name: p.read_bytes() for p in state.rglob("*") if p.is_file() and p.name != "record.json"} == before
        assert json.loads((state / "record.json").read_text()) == record
        assert a.exec(["cat", "/etc/machine-id"]).strip() == machine_id_for(cid)
        halt(a)
    assert not (h.state_dir / cid).exists()


# --- 9. cgroup v1 without a cgroup namespace shows no other container ------------------------------

def test_v1_nested_cgroup_path_hides_sibling_groups(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    parent = "osh-docker-" + os.urandom(4).hex()
    v1 = Path("/sys/fs/cgroup/systemd")
    siblings = [v1 / parent / "other-container", v1 / "osh-machine.slice" / "libpod-x.scope"]
    try:
        for s in siblings:
            s.mkdir(parents=True)
        with h.container("c") as c:
            c.config["linux"]["cgroupsPath"] = f"/{parent}/{c.id}"
            boot(c)
            listing = c.exec(["ls", f"/sys/fs/cgroup/systemd/{parent}"]).split()
            assert listing == [c.id], "sibling groups under the container's parent are hidden"
            top = c.exec(["ls", "/sys/fs/cgroup/systemd"]).split()
            assert parent in top and "osh-machine.slice" in top, "top-level names may stay visible"
            own = c.exec(["ls", f"/sys/fs/cgroup/systemd/{parent}/{c.id}"]).split()
            assert "init.scope" in own, "systemd made its groups in its own cgroup"
            assert c.exec(["sh", "-c", f"touch /sys/fs/cgroup/systemd/{parent}/x 2>&1 || echo denied"]).strip(
                ).endswith("denied")
            if c.exec_result(["test", "-d", f"/sys/fs/cgroup/unified/{parent}"]).returncode == 0:
                assert c.exec(["ls", f"/sys/fs/cgroup/unified/{parent}"]).split() == [c.id]
            halt(c)
    finally:
        for s in siblings:
            s.rmdir()
        for group in (v1 / "osh-machine.slice", *(p / parent for p in Path("/sys/fs/cgroup").iterdir())):
            if group.is_dir():
                for d in sorted(group.rglob("*"), key=lambda p: len(str(p)), reverse=True):
                    if d.is_dir():
                        d.rmdir()
                group.rmdir()


def test_v2_nested_cgroup_path_without_cgroupns_hides_sibling_groups(tmp_path: Path) -> None:
    h = Hook(tmp_path)
    parent = "osh-parent-" + os.urandom(4).hex()
    with h.container("c", cgroup="v2", cgroupns=False) as c:
        c.config["linux"]["cgroupsPath"] = f"/{parent}/{c.id}"
        c.ns.run(["mkdir", "-p", f"/sys/fs/cgroup/{parent}/other-container"])
        try:
            boot(c)
            assert c.exec(["ls", f"/sys/fs/cgroup/{parent}"]).split() == [c.id]
            assert "init.scope" in c.exec(["ls", f"/sys/fs/cgroup/{parent}/{c.id}"]).split()
            halt(c)
        finally:
            c.ns.run(["sh", "-c", f"rmdir /sys/fs/cgroup/{parent}/other-container /sys/fs/cgroup/{parent}/* "
                                  f"/sys/fs/cgroup/{parent} 2>/dev/null; true"], check=False)


# --- 11. container-only layouts end cleanly ---------------------------------------------------------

def test_user_namespace_with_run_linked_to_var_run_boots(tmp_path: Path, world: Path) -> None:
    """An image whose /run is a symlink to /var/run (the reverse of Debian's), in a user namespace."""
    h = Hook(world, world / "journal")
    with h.container("c", userns=100000) as c:
        r = c.rootfs
        (r / "var" / "run").unlink()
        (r / "var" / "run").mkdir()
        os.lchown(r / "var" / "run", 100000, 100000)
        subprocess.run(["rm", "-rf", str(r / "run")], check=True)
        os.symlink("/var/run", r / "run")
        os.lchown(r / "run", 100000, 100000)
        boot(c)
        assert c.exec(["findmnt", "-no", "FSTYPE", "/var/run"]).split()[-1] == "tmpfs"
        assert c.exec(["readlink", "/run/systemd/system/systemd-machine-id-commit.service"]).strip() == "/dev/null"
        halt(c)
