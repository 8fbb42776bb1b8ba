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

import errno
import os
import stat

from oci_systemd_hook.linux import Stat, mount_id, stat_fd
from oci_systemd_hook.log import Log

#: Entries copied up per tmpfs at most (inodes of the tmpfs, time of the prestart).
MAX_ENTRIES = 10_000
#: Directories deep, at most (each level holds two descriptors while it is copied).
MAX_DEPTH = 32
_O_PATH_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_REOPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # /proc/self/fd/N: that very directory


class _Budget:
    def __init__(self, size: int) -> None:
        self.bytes = size
        self.entries = MAX_ENTRIES
        self.skipped: list[str] = []
        self.copied_last = False
        self.mount = 0  # the image's mount: what lies on another (a runtime's volume) is not copied
        self.uid, self.gid = os.geteuid(), os.getegid()  # what a new inode gets without a chown

    def skip(self, path: str, why: str) -> None:
        if len(self.skipped) < 5:
            self.skipped.append(f"{path} ({why})")
        elif len(self.skipped) == 5:
            self.skipped.append("...")


class _Frame:
    """A directory being copied: its image side (readable), its copy, and what is left of it."""

    __slots__ = ("src", "dst", "rel", "names", "st", "setgid", "gid")

    def __init__(self, src: int, dst: int, rel: str, st: Stat | None, setgid: bool, gid: int) -> None:
        self.src = src
        self.dst = dst
        self.rel = rel
        self.names = _names(src)
        self.st = st  # the image directory's times go on the copy once its content is in (None: the top)
        self.setgid = setgid  # the copy is set-group-ID: new entries in it take its group...
        self.gid = gid  # ...this one (else the hook's)

    def close(self) -> None:
        os.close(self.src)
        os.close(self.dst)


def copy_tree(src_dir: int, dst_dir: int, limit: int, where: str, log: Log) -> int:
    """Copy the tree below the directory `src_dir` (an O_PATH fd in the image) into `dst_dir`
    (the new tmpfs). Returns the number of entries copied.

    Depth first with a stack of open directories, so that descriptors are bounded by the
    depth (MAX_DEPTH), not by the number of directories. The umask is 0 meanwhile, so that
    each entry is created with its final mode: no chmod unless a chown cleared set-id bits."""
    budget = _Budget(limit)
    budget.mount = mount_id(src_dir)
    copied = 0
    stack: list[_Frame] = []
    umask = os.umask(0)
    try:
        top = os.open(f"/proc/self/fd/{src_dir}", _O_REOPEN_DIR)  # readable: listed, and the parent of the rest
        try:
            dst = os.fstat(dst_dir)
            setgid = bool(dst.st_mode & stat.S_ISGID)
            stack.append(_Frame(top, os.dup(dst_dir), "", None, setgid, dst.st_gid if setgid else budget.gid))
        except BaseException:
            os.close(top)
            raise
        while stack:
            frame = stack[-1]
            if not frame.names:
                stack.pop()
                try:
                    if frame.st is not None:  # times last: copying the content changed them
                        os.utime(frame.dst, ns=(frame.st.st_atime_ns, frame.st.st_mtime_ns))
                finally:
                    frame.close()
                continue
            name, is_dir = frame.names.pop()
            if budget.entries <= 0:
                budget.skip(f"{frame.rel}/{name}", f"more than {MAX_ENTRIES} entries")
                frame.names.clear()
                continue
            sub = _copy_entry(frame, name, is_dir, budget, len(stack) < MAX_DEPTH)
            if sub is not None:
                stack.append(sub)
            copied += 1 if budget.copied_last else 0
    finally:
        os.umask(umask)
        for frame in stack:
            frame.close()
    if budget.skipped:
        log.warning(f"copy-up of {where}: skipped {', '.join(budget.skipped)}")
    return copied


def _names(dfd: int) -> list[tuple[str, bool]]:
    """(name, is a directory as the directory entry says) below `dfd`, to be popped in name order."""
    names = []
    with os.scandir(dfd) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)  # a hint only: checked when opened
            except OSError:
                is_dir = False
            names.append((entry.name, is_dir))
            if len(names) > MAX_ENTRIES:
                break
    names.sort(reverse=True)
    return names


def _owner(fd: int, st: Stat, budget: _Budget, parent: _Frame, is_dir: bool) -> None:
    """The image's owner on a new entry, and its mode again where that is not what creating it
    gave: mkdir sets no set-id bits but inherits a set-group-ID parent's, and chown clears them
    on a file."""
    mode = stat.S_IMODE(st.st_mode)
    chowned = (st.st_uid, st.st_gid) != (budget.uid, parent.gid)
    if chowned:
        os.fchown(fd, st.st_uid, st.st_gid)
    setid = mode & (stat.S_ISUID | stat.S_ISGID)
    if (setid and (chowned or is_dir)) or (is_dir and parent.setgid and not mode & stat.S_ISGID):
        os.fchmod(fd, mode)


def _copy_entry(frame: _Frame, name: str, is_dir: bool, budget: _Budget, descend: bool) -> _Frame | None:
    """Copy one entry; for a directory, return the frame to copy its content with."""
    path = f"{frame.rel}/{name}"
    budget.copied_last = False
    fd = -1
    try:
        if is_dir:  # opening a directory to read it has no effect: straight to a listable descriptor
            try:
                fd = os.open(name, _O_DIR_NOFOLLOW, dir_fd=frame.src)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):  # not a directory after all: O_PATH
                    raise
        if fd < 0:
            fd = os.open(name, _O_PATH_NOFOLLOW, dir_fd=frame.src)
    except OSError as exc:
        budget.skip(path, exc.strerror or "unreadable")
        return None
    sub = None
    try:
        st = stat_fd(fd)
        if st.mount_id != budget.mount:  # a runtime mount (/run/secrets, a socket): kept on top, not copied
            return None
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if not descend:
                budget.skip(path, f"deeper than {MAX_DEPTH} directories")
                return None
            if not is_dir:  # a directory the entry did not announce: reopen it to list it
                rfd = os.open(f"/proc/self/fd/{fd}", _O_REOPEN_DIR)
                os.close(fd)
                fd = rfd
            try:
                os.mkdir(name, stat.S_IMODE(mode) & 0o1777, dir_fd=frame.dst)
            except FileExistsError:
                pass
            dfd = os.open(name, _O_DIR_NOFOLLOW, dir_fd=frame.dst)
            try:
                _owner(dfd, st, budget, frame, True)
                setgid = bool(mode & stat.S_ISGID)  # exactly the image's mode by now
                sub = _Frame(fd, dfd, path, st, setgid, st.st_gid if setgid else budget.gid)
            except BaseException:
                os.close(dfd)
                raise
            fd = -1  # the frame has it now
        elif stat.S_ISREG(mode):
            if st.st_size > budget.bytes:
                budget.skip(path, f"{st.st_size} bytes: over what is left of the tmpfs size")
                return None
            _copy_file(fd, frame, name, st, budget)
            budget.bytes -= st.st_size
        elif stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=frame.src)  # the link itself: never followed
            try:
                os.symlink(target, name, dir_fd=frame.dst)
            except FileExistsError:
                return None
            if (st.st_uid, st.st_gid) != (budget.uid, frame.gid):
                os.chown(name, st.st_uid, st.st_gid, dir_fd=frame.dst, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=frame.dst, follow_symlinks=False)
        else:
            budget.skip(path, "not a directory, regular file or symlink")
            return None
    except OSError as exc:
        budget.skip(path, exc.strerror or "cannot be copied")
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    budget.entries -= 1
    budget.copied_last = True
    return sub


def _copy_file(src: int, frame: _Frame, name: str, st: Stat, budget: _Budget) -> None:
    # The O_PATH descriptor is a regular file (statx said so): reopening it through /proc
    # reads that very inode, and never a FIFO or a device swapped in by name.
    rfd = os.open(f"/proc/self/fd/{src}", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      stat.S_IMODE(st.st_mode), dir_fd=frame.dst)
        try:
            left = st.st_size
            while left > 0:
                sent = os.sendfile(wfd, rfd, None, min(left, 1 << 20))
                if sent == 0:
                    break  # shorter than it said: what there is
                left -= sent
            _owner(wfd, st, budget, frame, False)
            os.utime(wfd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(wfd)
    finally:
        os.close(rfd)
