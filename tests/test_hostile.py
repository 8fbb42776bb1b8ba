"""Hostile images: every path the hook uses inside the rootfs comes from the image.

Each case plants symlinks (absolute, relative `..` escapes, /proc magic links, loops)
or wrong file types where the hook mounts, then runs a real prestart in a real mount
namespace. Whatever the hook decides (prepare the container, or refuse with one line),
nothing outside the rootfs may be written, chowned, mounted or deleted, and it must
never hang.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakecontainer import USERNS, FakeContainer, host_mount_table, needs_root, tree_snapshot, with_export

pytestmark = [needs_root, pytest.mark.root]

def replace_with_link(rootfs: Path, path: str, target: str) -> None:
    p = rootfs / path.lstrip("/")
    if p.is_dir() and not p.is_symlink():
        for child in sorted(p.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
        p.rmdir()
    elif p.exists() or p.is_symlink():
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, p)


def escape(path: str, canary: Path) -> str:
    """A relative link at `path` that climbs far above the root and into the canary."""
    depth = path.strip("/").count("/") + 8
    return "../" * depth + str(canary).lstrip("/")


def fifo(rootfs: Path, path: str) -> None:
    p = rootfs / path.lstrip("/")
    if p.exists():
        p.unlink()
    os.mkfifo(p)


def directory(rootfs: Path, path: str) -> None:
    p = rootfs / path.lstrip("/")
    if p.exists():
        p.unlink()
    p.mkdir()


def regular_file(rootfs: Path, path: str) -> None:
    p = rootfs / path.lstrip("/")
    if p.is_dir():
        p.rmdir()
    p.write_text("not a directory\n")


TARGETS = ["/etc/machine-id", "/etc", "/run", "/run/lock", "/tmp", "/var/log", "/var/log/journal", "/sys",
           "/sys/fs/cgroup", "/var"]

Case = Callable[[Path, Path], None]
CASES: dict[str, Case] = {}
for _t in TARGETS:
    CASES[f"abs-link{_t}"] = lambda r, c, t=_t: replace_with_link(r, t, str(c / "file" if "machine" in t else c))
    CASES[f"dotdot{_t}"] = lambda r, c, t=_t: replace_with_link(r, t, escape(t, c / "file" if "machine" in t else c))
    CASES[f"proc-self-root{_t}"] = lambda r, c, t=_t: replace_with_link(r, t, f"/proc/self/root{c}")
CASES.update({
    "loop-self/run": lambda r, c: replace_with_link(r, "/run", "/run"),
    "loop-pair/tmp": lambda r, c: (replace_with_link(r, "/tmp", "/tmp2"), replace_with_link(r, "/tmp2", "/tmp")),
    "loop-pair/etc/machine-id": lambda r, c: (replace_with_link(r, "/etc/machine-id", "/etc/m2"),
                                             replace_with_link(r, "/etc/m2", "/etc/machine-id")),
    "fifo/etc/machine-id": lambda r, c: fifo(r, "/etc/machine-id"),
    "dir/etc/machine-id": lambda r, c: directory(r, "/etc/machine-id"),
    "file/run": lambda r, c: regular_file(r, "/run"),
    "file/var/log": lambda r, c: regular_file(r, "/var/log"),
    "link-into-proc/etc/machine-id": lambda r, c: replace_with_link(r, "/etc/machine-id", "/proc/1/environ"),
    "link-to-dev/etc/machine-id": lambda r, c: replace_with_link(r, "/etc/machine-id", "/dev/zero"),
    "dotdot-inside-path/etc/machine-id": lambda r, c: replace_with_link(r, "/etc/machine-id",
                                                                       f"/etc/../../../..{c}/file"),
    "journal-host-link/var/log/journal/x": lambda r, c: (
        (r / "var/log/journal").mkdir(parents=True, exist_ok=True),
        replace_with_link(r, "/var/log/journal/deadbeef", str(c))),
})


@pytest.mark.parametrize("view", ["v1", "unified"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_image(tmp_path: Path, case: str, view: str) -> None:
    """Each case with runc's cgroup v1 layout, and with the cgroup2 view of a v1 host (a hybrid
    host's runc: the container in a cgroup2 group of its own too)."""
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "file").write_text("canary\n")
    os.chmod(canary / "file", 0o600)
    snapshot = tree_snapshot(canary)
    host_before = host_mount_table()

    with FakeContainer(tmp_path / "c", config=USERNS, mount_proc=True, unified_group=view == "unified") as c:
        CASES[case](c.rootfs, canary)
        mounts_before = {(m.mountpoint, m.mount_id) for m in c.mounts()}
        res = c.run_hook(timeout=20, args=[f"--cgroup-view={view}"])
        assert "Traceback" not in res.stderr
        assert res.returncode in (0, 2), res.stderr
        if res.returncode:
            assert len(res.stderr.strip().splitlines()) == 1, res.stderr
            assert not (c.state_dir / c.name).exists(), "a refused prestart leaves no state"
            assert list(c.journal_root.iterdir()) == [], "a refused prestart leaves no journal directory"
        new = [m for m in c.mounts() if (m.mountpoint, m.mount_id) not in mounts_before]
        outside = [m.mountpoint for m in new if not m.mountpoint.startswith(str(c.rootfs) + "/")]
        assert outside == [], f"mounted outside the rootfs: {outside}"
        assert tree_snapshot(canary) == snapshot, "the canary outside the rootfs changed"
        assert host_mount_table() == (with_export(host_before, c) if res.returncode == 0 else host_before)
        if view == "unified" and res.returncode == 0 and c.mount_at("/sys/fs/cgroup") is not None:
            assert c.mount_at("/sys/fs/cgroup").fstype == "cgroup2"  # type: ignore[union-attr]
        assert c.poststop().returncode == 0
        assert not (c.state_dir / c.name).exists()
    assert tree_snapshot(canary) == snapshot
    assert host_mount_table() == host_before


def test_contained_dangling_machine_id_link_is_followed_inside(tmp_path: Path) -> None:
    """A legitimate layout (read-only images do this): /etc/machine-id -> /run/machine-id."""
    with FakeContainer(tmp_path) as c:
        replace_with_link(c.rootfs, "/etc/machine-id", "/run/machine-id")
        res = c.run_hook()
        assert res.returncode == 0, res.stderr
        # Read the link's target as the container will see it after pivot_root.
        assert c.inside("/run/machine-id").read_text().strip() == c.machine_id()
        assert c.mount_at("/run/machine-id") is not None
        assert os.readlink(c.rootfs / "etc/machine-id") == "/run/machine-id", "the image's link is untouched"


# --- symlinks into the runtime's own mounts (config.json binds: host directories) -------------------

VOLUME_TARGETS = ["/run", "/run/lock", "/run/systemd", "/tmp", "/var/log", "/var/log/journal", "/etc",
                  "/etc/machine-id", "/var/lib", "/var"]


@pytest.mark.parametrize("propagation", ["private", "shared"])
@pytest.mark.parametrize("target", VOLUME_TARGETS)
def test_symlink_into_a_volume(tmp_path: Path, target: str, propagation: str) -> None:
    """In-root resolution keeps a path inside the root's tree, and a volume is inside it too: an
    image link into /vol must not make the hook create, chown or mount anything in the host
    directory behind it, whatever it decides."""
    mounts = [{"destination": "/vol", "type": "bind", "source": "/host/dir", "options": ["rbind", "rw"]}]
    config = {"mounts": mounts, "root": {"path": "rootfs", "readonly": target == "/var/lib"}}
    host_before = host_mount_table()
    with FakeContainer(tmp_path / "c", config=config, runtime_mounts=[("volume", "/vol")],
                       propagation=propagation) as c:
        volume = c.volume("/vol")
        (volume / "existing").mkdir()
        (volume / "existing" / "file").write_text("the tenant's data\n")
        before = tree_snapshot(volume)
        link = "/vol/existing" if target == "/etc/machine-id" else "/vol"
        replace_with_link(c.rootfs, target, link)
        mounts_before = {(m.mountpoint, m.mount_id) for m in c.mounts()}
        res = c.run_hook(timeout=20)
        assert "Traceback" not in res.stderr
        assert res.returncode in (0, 2), res.stderr
        if res.returncode:
            assert len(res.stderr.strip().splitlines()) == 1, res.stderr
            assert "refusing" in res.stderr
        new = [m.mountpoint for m in c.mounts() if (m.mountpoint, m.mount_id) not in mounts_before]
        on_volume = [p for p in new if p == str(c.rootfs) + "/vol" or p.startswith(str(c.rootfs) + "/vol/")]
        assert on_volume == [], f"mounted onto the volume: {on_volume}"
        assert tree_snapshot(volume) == before, "the hook changed the host directory behind the volume"
        assert c.poststop().returncode == 0
        assert tree_snapshot(volume) == before
    assert host_mount_table() == host_before
