"""Today's systemd on cgroup v1 hosts, for real: Debian sid (systemd 256 and later refuse v1)
boots with the hook's cgroup2 view on this hybrid host (with and without a cgroup
namespace), on a simulated legacy host (cgroup2 unmounted in a private mount namespace)
and on v2; Debian 13 too; Debian 12 keeps the v1 layout. After each delete, the host's
mounts and every cgroup hierarchy are as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci_systemd_hook.cgroupview import guest_systemd_version
from oci_systemd_hook.rootfs import Root
from tests import realboot
from tests.fakecontainer import needs_root
from tests.hookwiring import hooks, write_launcher

pytestmark = [needs_root, pytest.mark.root, pytest.mark.realboot]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(name: str) -> list[str]:
    """Directories named `name` anywhere in the host's cgroup hierarchies (two levels deep)."""
    found = []
    for top in CGROUP_ROOT.iterdir():
        for candidate in (top / name, *[d / name for d in top.iterdir() if d.is_dir()]):
            if candidate.is_dir():
                found.append(str(candidate))
    return found


def image_version(release: str) -> int | None:
    with Root(str(realboot.image_rootfs(release))) as root:
        return guest_systemd_version(root)


def boot(tmp_path: Path, release: str, cgroup: str, cgroupns: bool, *extra: str) -> dict[str, str]:
    """Boot, check running with no failed unit, halt on SIGRTMIN+3, delete; the host as before."""
    state_dir, journal_root = tmp_path / "hook-state", tmp_path / "journal"
    journal_root.mkdir(parents=True)
    launcher = write_launcher(tmp_path / "bin")
    host_before = realboot.mount_points()
    seen: dict[str, str] = {}
    with realboot.Container(tmp_path / "c", release=release, cgroup=cgroup, cgroupns=cgroupns, console=True,
                            hooks=hooks(launcher, state_dir, journal_root, *extra)) as c:
        ns_before = realboot.mount_points(c.ns.pid) if c.ns.pid else host_before
        c.create()
        c.start()
        word, failed = c.wait_running(timeout=60)
        assert (word, failed.strip()) == ("running", ""), c.console_text()[-3000:] or c.output()
        seen["fstype"] = c.exec(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]).strip()
        seen["pid1"] = c.exec(["cat", "/proc/1/cgroup"])
        c.kill(realboot.SIGRTMIN_3)
        assert c.wait_stopped(timeout=30), "systemd did not halt on SIGRTMIN+3"
        c.delete()
        assert not (state_dir / c.id).exists()
        if c.ns.pid:
            assert realboot.mount_points(c.ns.pid) == ns_before, "the namespace's mounts are as before"
        assert cgroup_dirs(c.id) == [], "no cgroup of the container is left in any hierarchy"
    assert realboot.mount_points() == host_before, "the host's mount table is as before"
    return seen


def test_sid_systemd_is_new_enough_to_refuse_v1() -> None:
    version = image_version("debian-sid")
    print(f"Debian sid image: systemd {version}")
    assert version is not None and version >= 256


@pytest.mark.parametrize("cgroupns", [False, True], ids=["no-cgroupns", "cgroupns"])
def test_sid_boots_on_this_hybrid_v1_host(tmp_path: Path, cgroupns: bool) -> None:
    seen = boot(tmp_path, "debian-sid", "v1", cgroupns)
    assert seen["fstype"] == "cgroup2fs"


@pytest.mark.parametrize("cgroupns", [False, True], ids=["no-cgroupns", "cgroupns"])
def test_sid_boots_on_a_legacy_host(tmp_path: Path, cgroupns: bool) -> None:
    seen = boot(tmp_path, "debian-sid", "legacy", cgroupns)
    assert seen["fstype"] == "cgroup2fs"
    assert "0::/" in seen["pid1"] and "0::/\n" not in seen["pid1"], "init is in a group of its own"


def test_sid_boots_on_v2(tmp_path: Path) -> None:
    assert boot(tmp_path, "debian-sid", "v2", True)["fstype"] == "cgroup2fs"


def test_debian_13_boots_on_v1_with_the_cgroup2_view(tmp_path: Path) -> None:
    assert boot(tmp_path, "debian-13", "v1", False)["fstype"] == "cgroup2fs"


def test_debian_12_keeps_v1_unless_asked(tmp_path: Path) -> None:
    assert boot(tmp_path / "auto", "debian-12", "v1", False)["fstype"] == "tmpfs"
    assert boot(tmp_path / "unified", "debian-12", "v1", False, "--cgroup-view=unified")["fstype"] == "cgroup2fs"
