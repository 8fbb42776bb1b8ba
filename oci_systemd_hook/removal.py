"""Removing a directory tree that a container filled, without giving up half-way.

A container writes whatever it likes into its journal directory: 100,000 nested
directories, a million files, symlinks pointing at the host. shutil.rmtree and
os.fwalk recurse in Python (RecursionError near 1,000 levels) or hold one
descriptor per level (EMFILE long before 100,000). This walk is iterative and
holds one directory descriptor at a time:

* it goes down with openat(O_NOFOLLOW | O_DIRECTORY) and never follows a symlink
  (a symlink is unlinked like a file);
* it goes back up with openat(".."), and checks that it arrived in the directory
  it came from (device and inode), so a tree moved meanwhile is never left;
* it never crosses into another filesystem;
* per level it remembers at most `_BATCH` names, so memory stays bounded by the
  depth, not by the width of the tree.

It imports nothing beyond `os`: poststop uses it on every container.
"""

from __future__ import annotations

import errno
import os
import stat

_BATCH = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str) -> None:
    """Remove the directory `path` and everything in it; the last component is not followed.

    Raises FileNotFoundError when it does not exist and NotADirectoryError for a symlink
    or a file, like shutil.rmtree.
    """
    parent, name = os.path.split(path.rstrip("/") or "/")
    pfd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_tree_at(pfd, name)
    finally:
        os.close(pfd)


def remove_tree_at(dirfd: int, name: str) -> None:
    """Remove the directory `name` below the directory descriptor `dirfd`, with its content."""
    try:
        top = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory (symlinks are not followed)", name) from None
        raise
    cur = top
    st = os.fstat(top)
    device = st.st_dev
    idents = [(st.st_dev, st.st_ino)]  # the directories from `top` down to `cur`
    names: list[str] = []  # names[i]: the name of level i+1 inside level i
    pending: list[list[str]] = [[]]  # per level: non-empty subdirectories still to visit
    try:
        while True:
            if not pending[-1]:
                pending[-1] = _empty_out(cur)
                if not pending[-1]:
                    if len(idents) == 1:
                        break
                    cur = _go_up(cur, idents[-2])
                    idents.pop()
                    pending.pop()
                    child = names.pop()
                    try:
                        os.rmdir(child, dir_fd=cur)
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                            raise
                        pending[-1].append(child)  # something appeared meanwhile: go again
                    continue
            child = pending[-1].pop()
            try:
                nfd = os.open(child, _DIR_FLAGS, dir_fd=cur)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced by a link or file meanwhile
                    _unlink(cur, child)
                    continue
                raise
            nst = os.fstat(nfd)
            if nst.st_dev != device:
                os.close(nfd)
                raise OSError(errno.EXDEV, "refusing to remove across a mount point", child)
            os.close(cur)
            cur = nfd
            idents.append((nst.st_dev, nst.st_ino))
            names.append(child)
            pending.append([])
    finally:
        os.close(cur)
    os.rmdir(name, dir_fd=dirfd)


def _empty_out(dfd: int) -> list[str]:
    """Unlink every non-directory and every empty directory in `dfd`; return (some) others."""
    rest: list[str] = []
    with os.scandir(dfd) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if not is_dir:
                _unlink(dfd, entry.name)
                continue
            try:
                os.rmdir(entry.name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if len(rest) < _BATCH:
                    rest.append(entry.name)
    return rest


def _unlink(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # a directory took its place: the next scan gets it
        pass


def _go_up(cur: int, expected: tuple[int, int]) -> int:
    parent = os.open("..", _DIR_FLAGS, dir_fd=cur)
    st = os.fstat(parent)
    if (st.st_dev, st.st_ino) != expected or not stat.S_ISDIR(st.st_mode):
        os.close(parent)
        raise OSError(errno.ESTALE, "a directory was moved out of the tree during removal")
    os.close(cur)
    return parent
