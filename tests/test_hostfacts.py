"""Parsers of /proc tables and the cgroup lookups, on recorded text."""

from __future__ import annotations

import pytest

from oci_systemd_hook.hostfacts import (
    HostFacts,
    below,
    cgroup_host_dir,
    find_cgroup_mount,
    parse_mountinfo,
    parse_proc_cgroup,
)

#: This machine's /proc/self/mountinfo (cgroup v1 hybrid), abridged.
HYBRID_HOST = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334460k,nr_inodes=3083615,mode=755
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

#: A pure cgroup v2 host (Fedora/Debian 12 with systemd), with optional fields.
V2_HOST = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw,seclabel
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw,seclabel
25 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:3 - cgroup2 cgroup2 rw,seclabel,nsdelegate
26 22 0:24 / /run rw,nosuid,nodev shared:13 - tmpfs tmpfs rw,seclabel,size=1611248k,mode=755
"""


def test_parse_mountinfo_fields() -> None:
    mounts = parse_mountinfo(HYBRID_HOST)
    assert len(mounts) == 15
    m = mounts[-2]
    assert (m.mount_id, m.parent_id, m.root, m.mountpoint, m.options, m.fstype, m.source, m.super_options) == (
        40, 31, "/", "/sys/fs/cgroup/systemd", "rw,relatime", "cgroup", "cgroup", "rw,name=systemd")
    assert m.option_set() == {"rw", "relatime", "name=systemd"}


def test_parse_mountinfo_optional_fields() -> None:
    mounts = parse_mountinfo(V2_HOST)
    assert [(m.mountpoint, m.fstype) for m in mounts] == [
        ("/", "ext4"), ("/proc", "proc"), ("/sys", "sysfs"), ("/sys/fs/cgroup", "cgroup2"), ("/run", "tmpfs")]
    assert mounts[3].super_options == "rw,seclabel,nsdelegate"
    assert mounts[3].options == "rw,nosuid,nodev,noexec,relatime"
    line = "100 99 0:50 /x /mnt/y rw shared:5 master:3 propagate_from:2 unbindable - tmpfs none rw"
    (m,) = parse_mountinfo(line)
    assert (m.root, m.mountpoint, m.fstype, m.source, m.super_options) == ("/x", "/mnt/y", "tmpfs", "none", "rw")


def test_parse_mountinfo_escapes() -> None:
    text = (r"300 27 0:60 /my\040dir /mnt/with\040space\011tab rw - tmpfs my\040src rw" "\n"
            r"301 27 0:61 / /mnt/back\134slash\012nl rw - tmpfs tmpfs rw" "\n"
            r"302 27 0:62 / /mnt/trailing\040 rw - tmpfs tmpfs rw" "\n")
    mounts = parse_mountinfo(text)
    assert [m.mountpoint for m in mounts] == ["/mnt/with space\ttab", "/mnt/back\\slash\nnl", "/mnt/trailing "]
    assert mounts[0].root == "/my dir"
    assert mounts[0].source == "my src"


def test_parse_mountinfo_skips_garbage_and_short_lines() -> None:
    text = "\n".join(["", "garbage", "1 2 3 4 5 6", "x 1 0:1 / /a rw - tmpfs t rw", "5 1 0:1 / /ok rw - tmpfs t",
                      "6 1 0:1 / /nodash rw tmpfs t rw"])
    mounts = parse_mountinfo(text)
    assert [(m.mountpoint, m.super_options) for m in mounts] == [("/ok", "")]


HYBRID_CGROUP = """\
12:hugetlb:/
9:name=systemd:/foo
4:memory:/bar
3:cpu,cpuacct:/user.slice/c1
1:net_cls,net_prio:/
0::/
"""


def test_parse_proc_cgroup_v1_hybrid() -> None:
    cg = parse_proc_cgroup(HYBRID_CGROUP)
    assert cg["name=systemd"] == "/foo"
    assert cg["memory"] == "/bar"
    assert cg[""] == "/"
    assert cg["cpu,cpuacct"] == cg["cpu"] == cg["cpuacct"] == "/user.slice/c1"
    assert cg["net_prio"] == "/"
    assert "systemd" not in cg


def test_parse_proc_cgroup_v2() -> None:
    cg = parse_proc_cgroup("0::/machine.slice/libpod-abc.scope/container\n")
    assert cg == {"": "/machine.slice/libpod-abc.scope/container"}


def test_parse_proc_cgroup_odd_lines() -> None:
    cg = parse_proc_cgroup("garbage\n0::/a:b:c\n\n5:pids\n")
    assert cg == {"": "/a:b:c"}


@pytest.mark.parametrize(
    ("path", "parent", "rel"),
    [("/a/b", "/", "a/b"), ("/", "/", ""), ("/a", "/a", ""), ("/a/b/c", "/a", "b/c"), ("/ab", "/a", None),
     ("/a", "/a/b", None), ("a", "/", None), ("/x", "/a", None), ("/a/", "/a", "")],
)
def test_below(path: str, parent: str, rel: str | None) -> None:
    assert below(path, parent) == rel


def test_find_cgroup_mount_hybrid() -> None:
    mounts = parse_mountinfo(HYBRID_HOST)
    systemd = find_cgroup_mount(mounts, "name=systemd")
    assert systemd is not None and systemd.mountpoint == "/sys/fs/cgroup/systemd"
    memory = find_cgroup_mount(mounts, "memory")
    assert memory is not None and memory.mountpoint == "/sys/fs/cgroup/memory"
    v2 = find_cgroup_mount(mounts, None)
    assert v2 is not None and v2.mountpoint == "/sys/fs/cgroup/unified"
    assert find_cgroup_mount(mounts, "hugetlb") is None
    assert find_cgroup_mount(mounts, "systemd") is None  # the option is name=systemd


def test_find_cgroup_mount_prefers_the_highest_root() -> None:
    text = HYBRID_HOST + ("90 31 0:37 /machine.slice/c1 /var/lib/c1/rootfs/sys/fs/cgroup/systemd ro - cgroup cgroup "
                          "rw,name=systemd\n")
    mounts = parse_mountinfo(text)
    m = find_cgroup_mount(mounts, "name=systemd")
    assert m is not None and m.mountpoint == "/sys/fs/cgroup/systemd"
    mounts.reverse()
    m = find_cgroup_mount(mounts, "name=systemd")
    assert m is not None and m.root == "/"


def test_cgroup_host_dir_hybrid() -> None:
    mounts = parse_mountinfo(HYBRID_HOST)
    assert cgroup_host_dir(mounts, "name=systemd", "/foo") == "/sys/fs/cgroup/systemd/foo"
    assert cgroup_host_dir(mounts, "name=systemd", "/") == "/sys/fs/cgroup/systemd"
    assert cgroup_host_dir(mounts, "memory", "/process_api/98e4") == "/sys/fs/cgroup/memory/process_api/98e4"
    assert cgroup_host_dir(mounts, None, "/user.slice/c1") == "/sys/fs/cgroup/unified/user.slice/c1"
    assert cgroup_host_dir(mounts, "hugetlb", "/x") is None


def test_cgroup_host_dir_v2() -> None:
    mounts = parse_mountinfo(V2_HOST)
    assert cgroup_host_dir(mounts, None, "/machine.slice/c1") == "/sys/fs/cgroup/machine.slice/c1"
    assert cgroup_host_dir(mounts, None, "/") == "/sys/fs/cgroup"
    assert cgroup_host_dir(mounts, "name=systemd", "/machine.slice/c1") is None
    assert cgroup_host_dir(mounts, "memory", "/x") is None


def test_cgroup_host_dir_not_reachable_from_a_partial_mount() -> None:
    # The hook itself inside a cgroup namespace-like view: only /machine.slice is mounted.
    mounts = parse_mountinfo("25 24 0:23 /machine.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroup_host_dir(mounts, None, "/machine.slice/c1") == "/sys/fs/cgroup/c1"
    assert cgroup_host_dir(mounts, None, "/machine.slice") == "/sys/fs/cgroup"
    assert cgroup_host_dir(mounts, None, "/user.slice/c1") is None


def test_hostfacts_defaults() -> None:
    facts = HostFacts()
    assert facts.known is False
    assert (facts.cgroups, facts.host_mounts, facts.memory_limit, facts.ram, facts.selinux, facts.os_release,
            facts.journal_root_exists) == ({}, [], None, 0, False, "", False)
    facts.container_mounts = parse_mountinfo(V2_HOST)
    assert facts.known is True


def test_parses_this_hosts_real_tables() -> None:
    with open("/proc/self/mountinfo") as f:
        mounts = parse_mountinfo(f.read())
    assert any(m.mountpoint == "/" for m in mounts)
    with open("/proc/self/cgroup") as f:
        cg = parse_proc_cgroup(f.read())
    assert all(p.startswith("/") for p in cg.values())


def test_mountinfo_peer_groups_and_escapes() -> None:
    """`shared` is set by a "shared:N" optional field only (a slave's "master:N" sends nothing,
    and a mount point of that name is not a peer group);
    octal escapes are undone in the root, the mount point and the source."""
    text = ("1 0 0:1 / /a\\040b rw master:3 - tmpfs t\\011x rw\n"
            "2 1 0:2 /x /c rw shared:4 master:5 - ext4 /dev/sda rw\n"
            "3 1 0:3 / /d rw - proc proc rw\n"
            "4 1 0:4 / /shared:9 rw master:1 - tmpfs tmpfs rw\n"
            "not a mountinfo line\n")
    got = [(m.mount_id, m.mountpoint, m.root, m.source, m.shared) for m in parse_mountinfo(text)]
    assert got == [(1, "/a b", "/", "t\tx", False), (2, "/c", "/x", "/dev/sda", True), (3, "/d", "/", "proc", False),
                   (4, "/shared:9", "/", "tmpfs", False)]
