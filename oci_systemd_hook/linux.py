"""The Linux syscalls the hook needs and Python's `os` lacks, called through `_ctypes`.

File-descriptor based mount API (open_tree, move_mount, fsopen/fsconfig/fsmount,
mount_setattr) and openat2: every mount is made onto a descriptor that was
resolved inside the container's root, never onto a path string that an image
could redirect with a symlink. pylibmount is neither on PyPI nor in Debian, and
libmount works on path strings anyway, so we talk to the kernel directly.

`import ctypes` costs a quarter of the interpreter's own start (its __init__ builds some
thirty types), on every prestart; the C module underneath, `_ctypes`, has all the hook
uses: a foreign-function pointer type with errno capture, a C long, a size_t and a byte
buffer. Where an interpreter lacks those (not CPython), the public ctypes does the same.
Structures (open_how, mount_attr) are passed as packed bytes, which the kernel only reads.

The syscall numbers below are in the range shared by every architecture (>= 424); the
others (setns, umount2, statx) go through libc.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # mypy reads this as true; `typing` itself costs more than the interpreter start
if TYPE_CHECKING:
    from typing import Any, Callable

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
_OPEN_HOW_SIZE = 24  # struct open_how: flags, mode, resolve (u64 each)
_MOUNT_ATTR_SIZE = 32  # struct mount_attr: attr_set, attr_clr, propagation, userns_fd (u64 each)

MS_PRIVATE = 1 << 18  # mount_attr.propagation

CLONE_NEWNS = 0x00020000
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_AF_UNIX = 1
_MSG_DONTWAIT_NOSIGNAL = 0x40 | 0x4000  # the same on every architecture (linux/socket.h)
_SUN_PATH_MAX = 108


def _socket_constants(machine: str) -> tuple[int, int, int]:
    """(SOCK_DGRAM | SOCK_CLOEXEC, SOL_SOCKET, SO_PASSCRED) on this architecture.

    Most use asm-generic/socket.h; these do not (each one's uapi asm/socket.h). SOCK_CLOEXEC
    is O_CLOEXEC everywhere; SOCK_NONBLOCK is not (Alpha, PA-RISC), so it is never used:
    a send says MSG_DONTWAIT instead."""
    dgram, level, passcred = 2, 1, 16
    if machine.startswith("mips"):
        dgram, level, passcred = 1, 0xFFFF, 17
    elif machine.startswith("alpha"):
        level, passcred = 0xFFFF, 17
    elif machine.startswith("sparc"):
        level, passcred = 0xFFFF, 0x0002
    elif machine.startswith("parisc"):
        level, passcred = 0xFFFF, 0x4010
    elif machine.startswith(("ppc", "powerpc")):
        passcred = 20
    return dgram | os.O_CLOEXEC, level, passcred


_SOCK_DGRAM_CLOEXEC, _SOL_SOCKET, _SO_PASSCRED = _socket_constants(os.uname().machine)


def _bind_libc() -> tuple[Callable[[str], Any], Any, Callable[[int], Any], Callable[[], int]]:
    """(function by name, size_t type, writable buffer of n bytes, errno of the last call)."""
    try:
        import _ctypes

        class _Long(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "l"

        class _SizeT(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "L"

        class _Char(_ctypes._SimpleCData):  # type: ignore[type-arg]
            _type_ = "c"

        class _Function(_ctypes.CFuncPtr):  # type: ignore[type-arg]
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _Long

        handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]  # NULL: this process

        def function(name: str) -> Any:
            return _Function(_ctypes.dlsym(handle, name))

        function("syscall")  # fails here, inside the try, where this path does not work
        return function, _SizeT, lambda size: (_Char * size)(), _ctypes.get_errno
    except (ImportError, AttributeError, TypeError):  # no private C module: the public one
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

        def function_ctypes(name: str) -> Any:
            fn = getattr(libc, name)
            fn.restype = ctypes.c_long
            return fn

        return function_ctypes, ctypes.c_size_t, ctypes.create_string_buffer, ctypes.get_errno


_function, _size_t, _buffer, _errno = _bind_libc()
_syscall = _function("syscall")
_setns = _function("setns")
_umount2 = _function("umount2")
_statx = _function("statx")
_socket = _function("socket")
_sendto = _function("sendto")
_bind = _function("bind")
_setsockopt = _function("setsockopt")


def _u64s(*values: int) -> bytes:
    """A C struct of u64 fields, in this machine's byte order."""
    return b"".join(v.to_bytes(8, sys.byteorder) for v in values)


def _check(result: int, what: str, path: str | None = None) -> int:
    """The one error helper: a negative result becomes an OSError saying what failed."""
    if result < 0:
        err = _errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _u64s(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    return _check(_syscall(NR_OPENAT2, dirfd, _b(path), how, _size_t(_OPEN_HOW_SIZE)), "openat2", path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_syscall(NR_OPEN_TREE, dirfd, _b(path), flags | OPEN_TREE_CLOEXEC), "open_tree", path)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    _check(_syscall(NR_MOVE_MOUNT, from_fd, _b(from_path), to_fd, _b(to_path), flags), "move_mount")


def fsopen(fstype: str) -> int:
    return _check(_syscall(NR_FSOPEN, _b(fstype), FSOPEN_CLOEXEC), "fsopen", fstype)


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    _check(_syscall(NR_FSCONFIG, fd, cmd, _b(key), _b(value), aux), f"fsconfig {key}={value}" if key else "fsconfig")


def fsmount(fd: int, attr_flags: int) -> int:
    return _check(_syscall(NR_FSMOUNT, fd, FSMOUNT_CLOEXEC, attr_flags), "fsmount")


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0) -> None:
    attr = _u64s(attr_set, attr_clr, propagation, 0)
    _check(_syscall(NR_MOUNT_SETATTR, dirfd, _b(path), flags, attr, _size_t(_MOUNT_ATTR_SIZE)), "mount_setattr",
           path)


def setns(fd: int, nstype: int) -> None:
    _check(_setns(fd, nstype), "setns")


def umount2(path: str, flags: int) -> None:
    _check(_umount2(_b(path), flags), "umount2", path)


def _statx_fd(fd: int, mask: int) -> tuple[bytes, int]:
    """statx of `fd` itself (O_PATH and symlinks too): the raw struct, and its mount id (from
    /proc/self/fdinfo on kernels before 5.8, which lack STATX_MNT_ID)."""
    buf = _buffer(_STATX_SIZE)
    _check(_statx(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, mask | STATX_MNT_ID, buf), "statx")
    raw = bytes(buf)
    if int.from_bytes(raw[0:4], sys.byteorder) & STATX_MNT_ID:
        return raw, int.from_bytes(raw[_STATX_MNT_ID_OFFSET:_STATX_MNT_ID_OFFSET + 8], sys.byteorder)
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                return raw, int(line.split()[1])
    raise OSError(0, "cannot tell the mount of a descriptor")


def mount_id(fd: int) -> int:
    """The id (as in mountinfo) of the mount that `fd` (any descriptor, O_PATH included) lies on.

    This is what tells a directory of the container's own root from one an image symlink led
    into a bind mount: the path alone cannot, after in-root resolution.
    """
    return _statx_fd(fd, 0)[1]


class Stat:
    """What one statx call says of a descriptor: the fields of os.stat_result the hook uses, and
    the mount it lies on (one system call where fstat and mount_id would be two)."""

    __slots__ = ("st_mode", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns", "mount_id")

    def __init__(self, raw: bytes, mnt_id: int) -> None:
        def u(offset: int, size: int) -> int:
            return int.from_bytes(raw[offset:offset + size], sys.byteorder)

        self.st_uid, self.st_gid, self.st_mode = u(20, 4), u(24, 4), u(28, 2)
        self.st_size = u(40, 8)
        self.st_atime_ns = int.from_bytes(raw[64:72], sys.byteorder, signed=True) * 10**9 + u(72, 4)
        self.st_mtime_ns = int.from_bytes(raw[112:120], sys.byteorder, signed=True) * 10**9 + u(120, 4)
        self.mount_id = mnt_id


_STATX_BASIC_STATS = 0x7FF


def stat_fd(fd: int) -> Stat:
    """statx of `fd` itself (an O_PATH descriptor too, a symlink's included), with its mount id."""
    return Stat(*_statx_fd(fd, _STATX_BASIC_STATS))


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


def set_flags(mount_fd: int, flags: tuple[str, ...] | list[str], recursive: bool = False,
              private: bool = False) -> None:
    """Set mount attributes (ro, nosuid, ...) on a (detached) mount; `private`: and take it out
    of the peer group it was cloned from.

    A clone of a directory on a shared host mount (the host's / and /run are shared under
    systemd) is a peer of that mount: attached in a container as it is, whatever the container
    mounts below it would appear on the host, and the host's mounts there in the container.
    """
    if flags or private:
        mount_setattr(mount_fd, "", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0), attrs(flags),
                      propagation=MS_PRIVATE if private else 0)


def attach(mount_fd: int, target_fd: int) -> None:
    """Mount a detached mount onto the file or directory that target_fd refers to."""
    move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def _sockaddr_un(path: str) -> bytes:
    raw = os.fsencode(path)
    if len(raw) >= _SUN_PATH_MAX:
        raise OSError(36, "socket path too long", path)  # ENAMETOOLONG
    return _AF_UNIX.to_bytes(2, sys.byteorder) + raw + b"\0"


def bound_datagram_socket(path: str, pass_credentials: bool = False) -> int:
    """A datagram socket (blocking, close-on-exec) bound at `path`; returns its descriptor.

    `pass_credentials`: SO_PASSCRED from the start, so that every datagram, those queued
    before the reader starts included, says which process sent it."""
    addr = _sockaddr_un(path)
    fd = _check(_socket(_AF_UNIX, _SOCK_DGRAM_CLOEXEC, 0), "socket")
    try:
        if pass_credentials:
            _check(_setsockopt(fd, _SOL_SOCKET, _SO_PASSCRED, (1).to_bytes(4, sys.byteorder), 4), "setsockopt")
        _check(_bind(fd, addr, len(addr)), "bind", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def send_datagram(path: str, data: bytes) -> None:
    """Send one datagram to the AF_UNIX socket at `path`, never blocking (syslog's /dev/log).

    Here rather than through `_socket`, whose import costs a millisecond on every prestart
    that already has libc at hand for its mounts."""
    addr = _sockaddr_un(path)
    fd = _check(_socket(_AF_UNIX, _SOCK_DGRAM_CLOEXEC, 0), "socket")
    try:
        _check(_sendto(fd, data, _size_t(len(data)), _MSG_DONTWAIT_NOSIGNAL, addr, len(addr)), "sendto", path)
    finally:
        os.close(fd)


def detach(mount_fd: int) -> None:
    """Lazily unmount the mount that an attached mount fd refers to."""
    umount2(f"/proc/self/fd/{mount_fd}", MNT_DETACH)
