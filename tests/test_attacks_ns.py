"""Attacks on the hook staged in the namespace harness (a real mount namespace laid out as runc
leaves it before pivot_root): what needs a hostile image, a racing process, a huge tree or a
killed hook. Each asserts what the host and the container look like afterwards."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oci_systemd_hook.ids import machine_id_for
from tests.fakecontainer import (
    USERNS,
    FakeContainer,
    container_table,
    host_table,
    needs_root,
    tree_snapshot,
)

pytestmark = [needs_root, pytest.mark.root]
QUIET = {"OCI_SYSTEMD_HOOK_SYSLOG_SOCKET": ""}


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- 2. a refused prestart never leads to another journal being removed ---------------------------

def test_refused_prestart_with_journal_remove_keeps_a_foreign_journal(tmp_path: Path) -> None:
    with FakeContainer(tmp_path, config={"process": {"args": ["/sbin/init"], "env": [
            "container_uuid=" + "ab" * 16]}, "annotations": {"oci-systemd-hook.journal": "remove"}}) as c:
        victim = c.journal_root / ("ab" * 16)
        victim.mkdir()
        (victim / "system.journal").write_text("the host's\n")
        (c.rootfs / "etc" / "machine-id").unlink()
        os.mkfifo(c.rootfs / "etc" / "machine-id")  # the image makes prestart refuse
        res = c.run_hook()
        assert res.returncode == 2
        one_line(res.stderr)
        assert c.poststop().returncode == 0
        assert (victim / "system.journal").read_text() == "the host's\n"
        # Without any state at all (poststop only), the same.
        assert c.poststop().returncode == 0
        assert victim.is_dir()


def test_journal_store_must_be_private(tmp_path: Path) -> None:
    """A store someone else made (or loosened) is not used: the journal is not linked."""
    with FakeContainer(tmp_path) as c:
        store = c.journal_root / ".oci-systemd-hook"
        store.mkdir(mode=0o755)
        store.chmod(0o755)
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert c.mount_at(f"/var/log/journal/{c.machine_id()}") is None, "not linked through an open store"
        assert list(store.iterdir()) == [] and list(c.journal_root.iterdir()) == [store]
        assert store.stat().st_mode & 0o777 == 0o755
        assert c.poststop().returncode == 0


# --- 5. sizes are bounded ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", ["17179869184g", "100000%", "18446744073709551616"])
def test_overflowing_sizes_are_refused(tmp_path: Path, size: str) -> None:
    with FakeContainer(tmp_path, config={"annotations": {"oci-systemd-hook.run-size": size}}) as c:
        before = container_table(c)
        res = c.run_hook()
        assert res.returncode == 2
        assert "run-size" in one_line(res.stderr)
        assert container_table(c) == before
        assert not (c.state_dir / c.name).exists()


def _size_kib(c: FakeContainer, path: str) -> int:
    m = c.mount_at(path)
    assert m is not None and m.fstype == "tmpfs"
    opts = dict(o.partition("=")[::2] for o in m.super_options.split(","))
    return int(opts["size"].rstrip("k"))


def test_annotation_sizes_are_capped_by_the_hosts_maximum(tmp_path: Path) -> None:
    ram_kib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024
    annotations = {"oci-systemd-hook.run-size": "100%", "oci-systemd-hook.tmp-size": "64g"}
    with FakeContainer(tmp_path, config={"annotations": annotations}) as c:
        assert c.run_hook().returncode == 0
        for path in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
            assert _size_kib(c, path) <= ram_kib // 4 + 4, path  # default max-size: 25% of RAM
        assert c.poststop().returncode == 0
    with FakeContainer(tmp_path / "2", config={"annotations": annotations}) as c:
        assert c.run_hook(args=["--max-size=8m"]).returncode == 0
        assert _size_kib(c, "/run") == 8192 and _size_kib(c, "/tmp") == 8192
        assert c.poststop().returncode == 0
    with FakeContainer(tmp_path / "3") as c:  # the host's own flags are not capped
        assert c.run_hook(args=["--run-size=512m", "--max-size=8m"]).returncode == 0
        assert _size_kib(c, "/run") == 512 * 1024
        assert c.poststop().returncode == 0


# --- 6. removal of container-controlled trees never gives up half-way ----------------------------

def _deep(base: int, levels: int) -> None:
    cur = os.dup(base)
    for i in range(levels):
        os.mkdir("d", dir_fd=cur)
        if i % 997 == 0:
            os.symlink("/etc", "to-etc", dir_fd=cur)
            os.mknod("f", stat.S_IFREG | 0o644, dir_fd=cur)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=cur)
        os.close(cur)
        cur = nxt
    os.close(cur)


def _wide(base: int, dirs: int, per_dir: int) -> None:
    for i in range(dirs):
        name = f"w{i}"
        os.mkdir(name, dir_fd=base)
        d = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=base)
        os.mknod("0", stat.S_IFREG | 0o644, dir_fd=d)
        for j in range(1, per_dir):
            os.link("0", str(j), src_dir_fd=d, dst_dir_fd=d)
        os.close(d)


def test_removal_of_a_huge_journal_tree(tmp_path: Path) -> None:
    """100,000 levels deep and 1,000,000 entries in the container's journal (journal=remove)."""
    journal_fs = tmp_path / "journalfs"
    journal_fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,nr_inodes=2m", "journalfs", str(journal_fs)], check=True)
    try:
        with FakeContainer(tmp_path / "c") as c:
            c.journal_root = journal_fs
            canary = tmp_path / "canary"
            canary.mkdir()
            (canary / "keep").write_text("x")
            res = c.run_hook(args=["--journal=remove"])
            assert res.returncode == 0, res.stderr
            mid = machine_id_for(c.name)
            data = journal_fs / ".oci-systemd-hook" / mid
            fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
            try:
                _deep(fd, 100_000)
                _wide(fd, 1000, 1000)
                os.symlink(str(canary), "canary", dir_fd=fd)
            finally:
                os.close(fd)
            started = time.monotonic()
            stop = c.poststop(timeout=600)
            took = time.monotonic() - started
            assert stop.returncode == 0, stop.stderr
            assert not (c.state_dir / c.name).exists()
            assert not data.exists() and not (journal_fs / mid).exists()
            assert (canary / "keep").read_text() == "x", "a symlink inside was followed"
            print(f"removed 100,000 levels and 1,000,000 entries in {took:.1f} s")
    finally:
        subprocess.run(["umount", "-l", str(journal_fs)], check=False)


def test_removal_never_leaves_the_tree_when_a_directory_is_moved(tmp_path: Path) -> None:
    """A directory moved out of the tree while it is being emptied: the walk notices on its way up
    (device and inode of '..') and stops rather than deleting in the new parent."""
    from oci_systemd_hook import removal

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    top = tmp_path / "tree"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    real_go_up = removal._go_up
    moved = []

    def go_up(cur: int, expected: tuple[int, int]) -> int:
        if not moved:
            os.rename(top / "a", victim / "a")  # "a" now lives in the victim's directory
            moved.append(True)
        return real_go_up(cur, expected)

    removal._go_up = go_up  # type: ignore[assignment]
    try:
        with pytest.raises(OSError, match="moved out of the tree"):
            removal.remove_tree(str(top))
    finally:
        removal._go_up = real_go_up  # type: ignore[assignment]
    assert (victim / "precious").read_text() == "keep me\n"


# --- 7. nothing in the image is opened except as O_PATH ----------------------------------------------

RACER = r"""
import os, select, stat, sys, time
target, stop, log = sys.argv[1], sys.argv[2], sys.argv[3]
opened = 0
while not os.path.exists(stop):
    try:
        os.mkfifo(target)
    except FileExistsError:
        pass
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        continue
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # the hook's own file won the race: fine
        os.close(fd)
        time.sleep(0.001)
        continue
    time.sleep(0.01)  # there for 10 ms, with a reader, so that opening it for writing works
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    # POLLHUP on a FIFO only once a writer has opened it (and closed it): the hook opened the
    # image's file. A writer still busy when it was unlinked is caught here too.
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLHUP)
    if p.poll(100):
        opened += 1
    os.close(fd)
    time.sleep(0.01)
open(log, "w").write(str(opened))
"""


#: Every in-root lookup of the hook takes 20 ms longer (strace's syscall delay injection), so that
#: the racer's FIFO comes and goes between two lookups of one path, as a slower host would allow.
SLOW_LOOKUPS = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=openat2", "-e",
                "inject=openat2:delay_exit=20000"]


def test_dangling_machine_id_link_racing_a_fifo(tmp_path: Path) -> None:
    """/etc/machine-id -> /etc/mid-target, and a racer that keeps making a FIFO there: the hook
    creates the target itself (mknodat) or refuses, but never opens what it finds, never hangs."""
    with FakeContainer(tmp_path) as c:
        (c.rootfs / "etc" / "machine-id").unlink()
        os.symlink("mid-target", c.rootfs / "etc" / "machine-id")
        stop, log = tmp_path / "stop", tmp_path / "opened"
        racer = subprocess.Popen([sys.executable, "-c", RACER, str(c.rootfs / "etc" / "mid-target"), str(stop),
                                  str(log)])
        codes = []
        try:
            for _ in range(15):
                res = c.run_hook(timeout=20, wrap=SLOW_LOOKUPS)
                assert "Traceback" not in res.stderr
                codes.append(res.returncode)
                if res.returncode:
                    one_line(res.stderr)
                assert c.poststop().returncode == 0
        finally:
            stop.touch()
            racer.wait(timeout=30)
        assert log.read_text() == "0", "the hook opened the FIFO the image raced in"
        assert set(codes) <= {0, 1, 2}, codes


@pytest.mark.parametrize("layout", ["dangling-link", "plain", "missing"])
def test_every_open_in_the_image_is_o_path(tmp_path: Path, layout: str) -> None:
    """Traced syscall by syscall: every in-root lookup (openat2) opens O_PATH, and nothing below
    the rootfs is opened otherwise. A missing file is made with mknodat, never with O_CREAT."""
    with FakeContainer(tmp_path) as c:
        mid_file = c.rootfs / "etc" / "machine-id"
        if layout != "plain":
            mid_file.unlink()
        if layout == "dangling-link":
            os.symlink("mid-target", mid_file)
        trace = tmp_path / "trace"
        res = c.run_hook(wrap=["strace", "-f", "-qq", "-s", "4096", "-o", str(trace), "-e",
                               "trace=open,openat,openat2,creat,mknodat"])
        assert res.returncode == 0, res.stderr
        calls = trace.read_text().splitlines()
        in_root = [line for line in calls if "openat2(" in line]
        assert in_root, "the hook resolves paths with openat2"
        assert all("O_PATH" in line for line in in_root), [line for line in in_root if "O_PATH" not in line]
        rootfs = str(c.rootfs)
        others = [line for line in calls if rootfs in line and ("openat(" in line or "open(" in line)
                  and "O_PATH" not in line and "O_DIRECTORY" not in line]
        assert others == [], others
        if layout != "plain":
            assert any("mknodat(" in line and "S_IFREG" in line for line in calls)
        assert c.inside("/etc/machine-id").read_text().strip() == c.machine_id()
        assert c.poststop().returncode == 0


def test_dangling_link_chain_is_followed_inside_the_root(tmp_path: Path) -> None:
    """A chain of dangling links (/etc/machine-id -> ../run/a -> /run/b): the file is made at the
    end of the chain, inside the root, in the hook's own /run."""
    with FakeContainer(tmp_path) as c:
        (c.rootfs / "etc" / "machine-id").unlink()
        os.symlink("../run/a", c.rootfs / "etc" / "machine-id")
        res = c.run_hook()
        # /run is the hook's fresh tmpfs by then: the link's target does not exist in it.
        assert res.returncode == 0, res.stderr
        assert c.inside("/run/a").read_text().strip() == c.machine_id()
        assert c.poststop().returncode == 0


# --- 10. a prestart killed half-way and run again stacks nothing -------------------------------------

KILLER = r"""
import os, signal, sys
sys.path.insert(0, {repo!r})
from oci_systemd_hook import linux
real = linux.attach
calls = [0]
def attach(*a, **k):
    calls[0] += 1
    real(*a, **k)
    if calls[0] == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
linux.attach = attach
from oci_systemd_hook.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("n", [1, 3, 6, 9])
def test_killed_prestart_run_again_does_not_stack(tmp_path: Path, n: int) -> None:
    from tests.fakecontainer import REPO

    with FakeContainer(tmp_path / "ref") as ref:  # what one clean prestart leaves
        assert ref.run_hook().returncode == 0
        clean = sorted(m.mountpoint[len(str(ref.rootfs)):].replace(ref.name, "ID").replace(ref.machine_id(), "MID")
                       for m in ref.mounts()
                       if m.mountpoint.startswith(str(ref.rootfs) + "/"))
        assert ref.poststop().returncode == 0
    with FakeContainer(tmp_path / "c") as c:
        host_before = host_table(c.tmp)
        res = subprocess.run([sys.executable, "-I", "-c", KILLER.format(repo=str(REPO), n=n), "prestart",
                              *c.hook_args()], input=json.dumps(c.state()).encode(), capture_output=True,
                             env=QUIET, timeout=30, check=False)
        assert res.returncode == -signal.SIGKILL
        again = c.run_hook()
        assert again.returncode == 0, again.stderr
        now = sorted(m.mountpoint[len(str(c.rootfs)):].replace(c.name, "ID").replace(c.machine_id(), "MID")
                     for m in c.mounts()
                     if m.mountpoint.startswith(str(c.rootfs) + "/"))
        assert now == clean, "a second set of mounts was stacked on the first"
        assert c.inside("/etc/machine-id").read_text().strip() == c.machine_id()
        assert c.poststop().returncode == 0
        assert host_table(c.tmp) == host_before


# --- 11. container-only layouts end cleanly -----------------------------------------------------------

def test_user_namespace_with_run_linked_to_var_run(tmp_path: Path) -> None:
    with FakeContainer(tmp_path, config=USERNS, mount_proc=True) as c:
        (c.rootfs / "run").rmdir()
        (c.rootfs / "var" / "run").mkdir(parents=True)
        os.symlink("/var/run", c.rootfs / "run")
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        m = c.mount_at("/var/run")
        assert m is not None and m.fstype == "tmpfs"
        unit = c.inside("/var/run/systemd/system/systemd-machine-id-commit.service")
        assert os.readlink(unit) == "/dev/null"
        for p in (unit.parent, unit.parent.parent):
            assert (p.lstat().st_uid, p.lstat().st_gid) == (100000, 100000)
        assert c.poststop().returncode == 0


# --- 4. in the harness: a tmpfs that is a bind, and volumes behind image symlinks -------------------

def test_config_tmpfs_with_bind_options_is_not_written(tmp_path: Path) -> None:
    mounts = [{"destination": "/run", "type": "tmpfs", "source": "/somewhere", "options": ["rbind"]}]
    with FakeContainer(tmp_path, config={"mounts": mounts}, runtime_mounts=[("volume", "/run")]) as c:
        volume = c.volume("/run")
        before = tree_snapshot(volume)
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert tree_snapshot(volume) == before, "the hook wrote into a bind that calls itself tmpfs"
        assert (volume.stat().st_uid, volume.stat().st_mode & 0o7777) == (0, 0o755)
        assert c.poststop().returncode == 0


def test_readonly_root_with_a_volume_at_var_lib(tmp_path: Path) -> None:
    mounts = [{"destination": "/var/lib", "type": "bind", "source": "/somewhere", "options": ["rbind"]}]
    config = {"mounts": mounts, "root": {"path": "rootfs", "readonly": True}}
    with FakeContainer(tmp_path, config=config, runtime_mounts=[("volume", "/var/lib")]) as c:
        res = c.run_hook(args=["--dry-run"])
        assert "/var/lib/systemd: config.json mounts /var/lib from elsewhere" in res.stdout
        assert c.run_hook().returncode == 0
        assert list(c.volume("/var/lib").iterdir()) == []
        assert c.poststop().returncode == 0


def test_registry_claims_are_released(tmp_path: Path) -> None:
    from oci_systemd_hook import registry

    with FakeContainer(tmp_path) as c:
        assert c.run_hook().returncode == 0
        claim = c.state_dir / ".machine-ids" / c.machine_id()
        assert os.readlink(claim) == c.name
        assert registry.journal_owner(str(c.journal_root), c.machine_id()) == c.name
        assert c.poststop().returncode == 0
        assert not claim.exists() and not claim.parent.exists()
        assert registry.journal_owner(str(c.journal_root), c.machine_id()) == c.name, "kept (journal=keep)"


RACED_CLAIM = r"""
import sys
sys.path.insert(0, {repo!r})
from oci_systemd_hook import registry
registry.journal_owner = lambda root, mid: None  # planned as free; someone takes it before the claim
from oci_systemd_hook.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_journal_taken_between_plan_and_claim_is_left_alone(tmp_path: Path) -> None:
    from tests.fakecontainer import REPO

    with FakeContainer(tmp_path) as c:
        victim = c.journal_root / c.machine_id()
        victim.mkdir()
        (victim / "system.journal").write_text("someone else's\n")
        before = tree_snapshot(victim)
        res = subprocess.run([sys.executable, "-I", "-c", RACED_CLAIM.format(repo=str(REPO)), "prestart",
                              *c.hook_args()], input=json.dumps(c.state()).encode(), capture_output=True,
                             env=QUIET, timeout=30, check=False)
        assert res.returncode == 0, res.stderr
        assert "not linking the journal" in res.stderr.decode()
        assert c.mount_at(f"/var/log/journal/{c.machine_id()}") is None
        assert tree_snapshot(victim) == before
        assert not (c.journal_root / ".oci-systemd-hook").exists() or not any(
            (c.journal_root / ".oci-systemd-hook").iterdir())
        assert c.run_hook("poststop", c.state(pid=None, status="stopped"), args=["--journal=remove"],
                          env={}).returncode == 0
        assert tree_snapshot(victim) == before


def test_runtime_mask_never_lands_in_the_image(tmp_path: Path) -> None:
    """podman --systemd=always copies the image's /run into its tmpfs (tmpcopyup), symlinks
    included: /run/systemd -> /etc/systemd-x must not make the hook write into the image."""
    mounts = [{"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}]
    with FakeContainer(tmp_path, config={"mounts": mounts}, runtime_mounts=[("tmpfs", "/run")]) as c:
        (c.rootfs / "etc" / "systemd-x").mkdir()
        os.symlink("/etc/systemd-x", c.inside("/run/systemd"))
        before = tree_snapshot(c.rootfs / "etc")
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        assert "skipping /run/systemd/system/systemd-machine-id-commit.service" in res.stderr
        assert tree_snapshot(c.rootfs / "etc") == before, "the hook wrote into the image"
        assert c.inside("/etc/machine-id").read_text().strip() == c.machine_id()
        assert c.poststop().returncode == 0


def test_a_stale_record_releases_its_machine_id(tmp_path: Path) -> None:
    """A container gone without a poststop, its id reused with another container_uuid: the old
    claim goes, so that the id is free for whoever asks for it next."""
    with FakeContainer(tmp_path) as c:
        stale = "ab" * 16
        state = c.state_dir / c.name
        state.mkdir(parents=True)
        (state / "record.json").write_text(json.dumps({"id": c.name, "bundle": str(c.bundle), "pid": 1,
                                                       "pid_start": -1, "rootfs": str(c.rootfs),
                                                       "machine_id": stale, "complete": True}))
        (c.state_dir / ".machine-ids").mkdir()
        os.symlink(c.name, c.state_dir / ".machine-ids" / stale)
        assert c.run_hook().returncode == 0
        assert not (c.state_dir / ".machine-ids" / stale).exists()
        assert os.readlink(c.state_dir / ".machine-ids" / c.machine_id()) == c.name
        assert c.poststop().returncode == 0


# --- 11. what the container mounts below the hook's binds stays in the container --------------------

def test_container_mounts_below_the_hooks_binds_stay_off_the_host(tmp_path: Path) -> None:
    """The host's / and /run are shared under systemd, and a clone of a directory there is a peer
    of the host's mount: bound into the container as it is, a mount the container makes below
    /run/host or its journal directory would appear on the host (and in every namespace that
    follows it), and pin the host's mount table. The hook makes its binds private."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        with FakeContainer(shared / "c") as c:
            assert c.run_hook().returncode == 0
            host_before = host_table(c.tmp)
            mid = c.machine_id()
            c.inside("/run/host/unix-export/sub").mkdir()
            inside = [("run/host/os-release", ["--bind", "/etc/hostname"]),
                      ("run/host/unix-export/sub", ["-t", "tmpfs", "tenant"]),
                      ("run/host/unix-export", ["-t", "tmpfs", "tenant"]),
                      (f"var/log/journal/{mid}", ["-t", "tmpfs", "tenant"])]
            for target, how in inside:
                res = subprocess.run(["nsenter", "-t", str(c.pid), "-m", "mount", *how, f"{c.rootfs}/{target}"],
                                     capture_output=True, text=True, check=False)
                assert res.returncode == 0, res.stderr
                assert c.mount_at("/" + target) is not None
            assert host_table(c.tmp) == host_before, "a mount of the container's reached the host"
            assert c.poststop().returncode == 0
            assert not (c.state_dir / c.name).exists()
            left = [m for m in host_table(c.tmp) if m[0].startswith(str(shared) + "/")]
            assert left == [], left
    finally:
        subprocess.run(["umount", "-R", str(shared)], check=False)
