"""The hook's per-container directory on the host and the record prestart leaves in it.

Kept free of ctypes so that poststop, which usually only reads the record and
removes a directory, stays cheap.
"""

from __future__ import annotations

import errno
import os
import stat

from oci_systemd_hook import jsonlite

RECORD = "record.json"


def remove_tree(path: str) -> None:
    """Remove a directory tree without following symlinks planted inside it.

    Like shutil.rmtree on Linux it works on directory descriptors (os.fwalk), but
    without importing shutil, which pulls in fnmatch, re, enum, bz2 and lzma: more
    than the interpreter's own start-up, on every poststop.
    """
    if not stat.S_ISDIR(os.lstat(path).st_mode):  # FileNotFoundError as shutil's
        raise NotADirectoryError(errno.ENOTDIR, "not a directory (symlinks are not followed)", path)
    for _, dirnames, filenames, dirfd in os.fwalk(path, topdown=False, follow_symlinks=False, onerror=_raise):
        for name in filenames:
            os.unlink(name, dir_fd=dirfd)
        for name in dirnames:  # fwalk lists a symlink to a directory here too: unlink it
            try:
                os.rmdir(name, dir_fd=dirfd)
            except NotADirectoryError:
                os.unlink(name, dir_fd=dirfd)
    os.rmdir(path)


def _raise(exc: OSError) -> None:
    if not isinstance(exc, FileNotFoundError):  # gone meanwhile: what we wanted
        raise exc


def write_record(state_dir: str, record: dict[str, object]) -> None:
    """Replace the record atomically, so a crash leaves the old or the new one."""
    tmp = os.path.join(state_dir, RECORD + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, jsonlite.dumps(record, indent=1).encode())
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(state_dir, RECORD))


def read_record(state_dir: str) -> dict[str, object] | None:
    """The record, or None when there is none or it is unreadable (a crash mid-write)."""
    try:
        fd = os.open(os.path.join(state_dir, RECORD), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    try:
        record = jsonlite.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
