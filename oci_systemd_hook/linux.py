"""The Linux syscalls the hook needs and Python 3.11's `os` lacks, through ctypes.

File-descriptor based mount API (open_tree, move_mount, fsopen/fsconfig/fsmount,
mount_setattr) and openat2: every mount is made onto a descriptor that was
resolved inside the container's root, never onto a path string that an image
could redirect with a symlink. pylibmount is neither on PyPI nor in Debian, and
libmount works on path strings anyway, so we talk to the kernel directly.

The syscall numbers below are in the range shared by every architecture (>= 424).
"""

from __future__ import annotations

import ctypes
import os

NR_OPEN_TREE = 428
NR_MOVE_MOUNT = 429
NR_FSOPEN = 430
NR_FSCONFIG = 431
NR_FSMOUNT = 432
NR_OPENAT2 = 437
NR_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC

MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40

FSOPEN_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1

MOUNT_ATTR_RDONLY = 0x01
MOUNT_ATTR_NOSUID = 0x02
MOUNT_ATTR_NODEV = 0x04
MOUNT_ATTR_NOEXEC = 0x08
ATTR_BY_NAME = {"ro": MOUNT_ATTR_RDONLY, "nosuid": MOUNT_ATTR_NOSUID, "nodev": MOUNT_ATTR_NODEV,
                "noexec": MOUNT_ATTR_NOEXEC}

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

STATX_MNT_ID = 0x1000
_STATX_SIZE = 256
_STATX_MNT_ID_OFFSET = 144  # struct statx: stx_mnt_id follows the four timestamps and the device numbers

CLONE_NEWNS = 0x00020000
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str, path: str | None = None) -> int:
    """The one error helper: a negative result becomes an OSError saying what failed."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    return _check(_syscall(NR_OPENAT2, ctypes.c_int(dirfd), _b(path), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how))), "openat2", path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_syscall(NR_OPEN_TREE, ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags | OPEN_TREE_CLOEXEC)),
                  "open_tree", path)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    _check(_syscall(NR_MOVE_MOUNT, ctypes.c_int(from_fd), _b(from_path), ctypes.c_int(to_fd), _b(to_path),
                    ctypes.c_uint(flags)), "move_mount")


def fsopen(fstype: str) -> int:
    return _check(_syscall(NR_FSOPEN, _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC)), "fsopen", fstype)


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    _check(_syscall(NR_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(cmd), _b(key), _b(value), ctypes.c_int(aux)),
           f"fsconfig {key}={value}" if key else "fsconfig")


def fsmount(fd: int, attr_flags: int) -> int:
    return _check(_syscall(NR_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attr_flags)),
                  "fsmount")


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(_syscall(NR_MOUNT_SETATTR, ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags), ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr", path)


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def umount2(path: str, flags: int) -> None:
    _check(_libc.umount2(_b(path), ctypes.c_int(flags)), "umount2", path)


def mount_id(fd: int) -> int:
    """The id (as in mountinfo) of the mount that `fd` (any descriptor, O_PATH included) lies on.

    This is what tells a directory of the container's own root from one an image symlink led
    into a bind mount: the path alone cannot, after in-root resolution.
    """
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    result = _libc.statx(ctypes.c_int(fd), b"", ctypes.c_int(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW),
                         ctypes.c_uint(STATX_MNT_ID), buf)
    _check(result, "statx")
    mask = int.from_bytes(buf.raw[0:4], "little")
    if mask & STATX_MNT_ID:
        return int.from_bytes(buf.raw[_STATX_MNT_ID_OFFSET:_STATX_MNT_ID_OFFSET + 8], "little")
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:  # kernels before 5.8
        for line in f:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(0, "cannot tell the mount of a descriptor")


def attrs(names: tuple[str, ...] | list[str]) -> int:
    """MOUNT_ATTR_* bits for flag names such as ("ro", "nosuid")."""
    bits = 0
    for name in names:
        bits |= ATTR_BY_NAME[name]
    return bits


# --- the few compound operations the rest of the hook is written in ----------------------------

def new_tmpfs(options: list[str], flags: tuple[str, ...] | list[str]) -> int:
    """A detached tmpfs with `options` (key=value, as for mount -o); returns its mount fd."""
    fs = fsopen("tmpfs")
    try:
        fsconfig(fs, FSCONFIG_SET_STRING, "source", "tmpfs")
        for opt in options:
            key, _, value = opt.partition("=")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            fsconfig(fs, FSCONFIG_SET_STRING, key, value)
        fsconfig(fs, FSCONFIG_CMD_CREATE)
        return fsmount(fs, attrs(flags))
    finally:
        os.close(fs)


def clone_tree(dirfd: int, path: str, recursive: bool = False) -> int:
    """A detached copy of the mount at dirfd/path (path "" means dirfd itself)."""
    flags = OPEN_TREE_CLONE | (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if path == "" else 0)
    return open_tree(dirfd, path, flags)


def set_flags(mount_fd: int, flags: tuple[str, ...] | list[str], recursive: bool = False) -> None:
    """Set mount attributes (ro, nosuid, ...) on a (detached) mount."""
    if flags:
        mount_setattr(mount_fd, "", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0), attrs(flags))


def attach(mount_fd: int, target_fd: int) -> None:
    """Mount a detached mount onto the file or directory that target_fd refers to."""
    move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def detach(mount_fd: int) -> None:
    """Lazily unmount the mount that an attached mount fd refers to."""
    umount2(f"/proc/self/fd/{mount_fd}", MNT_DETACH)
