"""The kernel's cgroup2 hierarchy on a host that has not mounted it (a "legacy" v1 host).

There is one cgroup2 hierarchy per kernel, mounted or not. The hook mounts it with the
new mount API and never attaches that mount anywhere: it is a descriptor, gone when the
hook exits, so the host's mount table is never touched. On it the hook makes the
container's group, moves the container's init there, and clones the group (and the
read-only root) for binding into the container; poststop mounts it the same way to
remove what prestart made.

Group names come from the container's name=systemd path, which the runtime chose
(trusted config); cgroupfs holds no symlinks, and every step is opened with O_NOFOLLOW
below a descriptor all the same.
"""

from __future__ import annotations

import errno
import os

from oci_systemd_hook import linux

#: Child groups removed below a group of ours at poststop (systemd makes a few dozen).
MAX_GROUPS = 10_000


def open_hierarchy() -> int:
    """A detached mount of the cgroup2 hierarchy (its root), as a descriptor."""
    fs = linux.fsopen("cgroup2")
    try:
        linux.fsconfig(fs, linux.FSCONFIG_CMD_CREATE)
        return linux.fsmount(fs, linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC)
    finally:
        os.close(fs)


def make_group(top: int, rel: str) -> tuple[int, list[str]]:
    """Make `rel` (and missing parents) below `top`: (an O_PATH fd of it, the paths created)."""
    created: list[str] = []
    cur = os.dup(top)
    done = ""
    try:
        for part in [p for p in rel.split("/") if p]:
            if part in (".", ".."):
                raise OSError(errno.EINVAL, f"not a cgroup name: {part!r}")
            done = f"{done}/{part}" if done else part
            try:
                os.mkdir(part, 0o755, dir_fd=cur)
                created.append(done)
            except FileExistsError:
                pass
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            os.close(cur)
            cur = nxt
        return os.dup(cur), created
    finally:
        os.close(cur)


def move_process(group: int, pid: int) -> None:
    """Move process `pid` (all its threads) into the group `group` (an fd of its directory)."""
    fd = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=group)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


def remove_group(top: int, rel: str) -> None:
    """rmdir `rel` below `top` with every child group in it, deepest first.

    On cgroupfs only directories are removed (their files go with them); a group that
    still has a process fails with EBUSY, which is raised. Iterative and bounded: the
    container's own systemd may have nested groups as deep and as many as it liked.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    found = [rel]  # every group below rel, parents before children
    i = 0
    while i < len(found):
        try:
            fd = os.open(found[i], flags, dir_fd=top)
        except FileNotFoundError:
            i += 1
            continue
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if len(found) >= MAX_GROUPS:
                            raise OSError(errno.E2BIG, f"more than {MAX_GROUPS} groups below {rel[:200]}")
                        found.append(f"{found[i]}/{entry.name}")
        finally:
            os.close(fd)
        i += 1
    for path in reversed(found):  # children before their parents
        try:
            os.rmdir(path, dir_fd=top)
        except FileNotFoundError:
            pass
