"""Copy-up: what the image has in a directory the hook mounts a fresh tmpfs over.

An image may ship content in /run, /tmp or /var/log/journal (a /run/lock directory, a
symlink systemd expects, a tmpfiles seed); the fresh tmpfs would hide it. podman copies
such content up (`tmpcopyup`); so does the hook, into the new tmpfs before it is attached.

The image is untrusted. Every entry is opened with O_PATH | O_NOFOLLOW, one component at
a time below a directory descriptor, so nothing is followed out of the image; only
directories, regular files and symlinks are copied (a symlink as the link itself, never
followed); a regular file's data is read through its O_PATH descriptor after fstat said it
is one, so a FIFO or a device is never opened; owners, modes and times are kept; the total
of file sizes is bounded by the tmpfs' size and COPY_UP_MAX (the hook writes those pages,
so they count against the runtime's memory) and the number of entries by MAX_ENTRIES, so a
huge file or a million names cannot fill the host's memory; what lies on another mount (a
runtime's volume below /run) is not read at all. What is skipped is said
once, in a warning.
"""

from __future__ import annotations

import os
import stat

from oci_systemd_hook.linux import mount_id
from oci_systemd_hook.log import Log

#: Entries copied up per tmpfs at most (inodes of the tmpfs, time of the prestart).
MAX_ENTRIES = 10_000
#: Directories deep, at most (each level holds two descriptors while it is copied).
MAX_DEPTH = 32
_O_PATH_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class _Budget:
    def __init__(self, size: int) -> None:
        self.bytes = size
        self.entries = MAX_ENTRIES
        self.skipped: list[str] = []
        self.copied_last = False
        self.mount = 0  # the image's mount: what lies on another (a runtime's volume) is not copied

    def skip(self, path: str, why: str) -> None:
        if len(self.skipped) < 5:
            self.skipped.append(f"{path} ({why})")
        elif len(self.skipped) == 5:
            self.skipped.append("...")


def copy_tree(src_dir: int, dst_dir: int, limit: int, where: str, log: Log) -> int:
    """Copy the tree below the directory `src_dir` (an O_PATH fd in the image) into `dst_dir`
    (the new tmpfs). Returns the number of entries copied.

    Depth first with a stack of open directories, so that descriptors are bounded by the
    depth (MAX_DEPTH), not by the number of directories."""
    budget = _Budget(limit)
    budget.mount = mount_id(src_dir)
    copied = 0
    stack: list[tuple[int, int, str, list[str]]] = []
    try:
        stack.append((os.dup(src_dir), os.dup(dst_dir), "", _names(src_dir)))
        while stack:
            sfd, dfd, rel, names = stack[-1]
            if not names:
                stack.pop()
                os.close(sfd)
                os.close(dfd)
                continue
            name = names.pop()
            if budget.entries <= 0:
                budget.skip(f"{rel}/{name}", f"more than {MAX_ENTRIES} entries")
                names.clear()
                continue
            sub = _copy_entry(sfd, dfd, rel, name, budget, len(stack) < MAX_DEPTH)
            if sub is not None:
                stack.append(sub)
            copied += 1 if budget.copied_last else 0
    finally:
        for sfd, dfd, _, _ in stack:
            os.close(sfd)
            os.close(dfd)
    if budget.skipped:
        log.warning(f"copy-up of {where}: skipped {', '.join(budget.skipped)}")
    return copied


def _names(sfd: int) -> list[str]:
    names = []
    with os.scandir(f"/proc/self/fd/{sfd}") as entries:  # the resolved directory, not a path in the image
        for entry in entries:
            names.append(entry.name)
            if len(names) > MAX_ENTRIES:
                break
    names.sort(reverse=True)  # popped from the end: copied in name order
    return names


def _copy_entry(sfd: int, dfd: int, rel: str, name: str, budget: _Budget,
                descend: bool) -> tuple[int, int, str, list[str]] | None:
    """Copy one entry; for a directory, return the frame to copy its content with."""
    path = f"{rel}/{name}"
    budget.copied_last = False
    try:
        fd = os.open(name, _O_PATH_NOFOLLOW, dir_fd=sfd)
    except OSError as exc:
        budget.skip(path, exc.strerror or "unreadable")
        return None
    frame = None
    try:
        if mount_id(fd) != budget.mount:  # a runtime mount (/run/secrets, a socket): kept on top, not copied
            return None
        st = os.fstat(fd)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if not descend:
                budget.skip(path, f"deeper than {MAX_DEPTH} directories")
                return None
            try:
                os.mkdir(name, 0o700, dir_fd=dfd)
            except FileExistsError:
                pass
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                _attributes(dfd, name, st)
                frame = (os.dup(fd), sub, path, _names(fd))
            except BaseException:
                os.close(sub)
                raise
        elif stat.S_ISREG(mode):
            if st.st_size > budget.bytes:
                budget.skip(path, f"{st.st_size} bytes: over what is left of the tmpfs size")
                return None
            _copy_file(fd, dfd, name, st)
            budget.bytes -= st.st_size
            _attributes(dfd, name, st)
        elif stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=sfd)  # the link itself: never followed
            try:
                os.symlink(target, name, dir_fd=dfd)
            except FileExistsError:
                return None
            _attributes(dfd, name, st)
        else:
            budget.skip(path, "not a directory, regular file or symlink")
            return None
    except OSError as exc:
        budget.skip(path, exc.strerror or "cannot be copied")
        return None
    finally:
        os.close(fd)
    budget.entries -= 1
    budget.copied_last = True
    return frame


def _copy_file(src: int, dfd: int, name: str, st: os.stat_result) -> None:
    # The O_PATH descriptor is a regular file (fstat said so): reopening it through /proc
    # reads that very inode, and never a FIFO or a device swapped in by name.
    rfd = os.open(f"/proc/self/fd/{src}", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(rfd).st_mode):
            raise OSError(0, "changed under the hook")
        wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            left = st.st_size
            while left > 0:
                sent = os.sendfile(wfd, rfd, None, min(left, 1 << 20))
                if sent == 0:
                    break  # shorter than it said: what there is
                left -= sent
        finally:
            os.close(wfd)
    finally:
        os.close(rfd)


def _attributes(dfd: int, name: str, st: os.stat_result) -> None:
    """The image's owner, mode and times, on the copy (a symlink: owner and times only)."""
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
