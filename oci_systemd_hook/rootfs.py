"""Paths inside an untrusted container root, resolved by the kernel inside it.

Every lookup goes through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS):
absolute symlinks and `..` are clamped to the root, /proc magic links are
refused, and what comes back is a descriptor, so nothing can be swapped
between checking and using. Nothing in the image is ever opened except as
O_PATH, which never blocks on a FIFO and never opens a device.

Creating is limited to what a mount needs: a missing directory (mkdirat) or an
empty regular file (mknodat), relative to a parent descriptor that was checked
first, so neither ever follows a symlink nor opens what it finds.

In-root resolution keeps a path inside the root's *directory tree*, but the tree
also holds the runtime's mounts: a bind of a host directory at /data is inside
the root too. With `allowed` set, every directory the hook creates in and every
target it returns must lie on one of those mounts (by mount id), so that an
image symlink such as /run -> /data cannot make the hook write into a volume.
"""

from __future__ import annotations

import errno
import os
import stat

from oci_systemd_hook import linux
from oci_systemd_hook.errors import InputError, ReadOnlyImage

_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY
_MAX_LINK_HOPS = 8
_KIND = {stat.S_IFDIR: "a directory", stat.S_IFREG: "a regular file", stat.S_IFLNK: "a symlink",
         stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket"}


def kind_of(mode: int) -> str:
    return _KIND.get(stat.S_IFMT(mode), "an unknown file type")


class ForeignMount(InputError):
    """A path the hook would use lies on a mount that is not the container's own."""


class Root:
    """An open directory that every path is resolved inside.

    `allowed` (mount ids) restricts where targets may lie and where anything may be
    created; None means no restriction (the image doctor only reads). `mounts` names
    mount ids for messages.
    """

    def __init__(self, path: str, allowed: set[int] | None = None, mounts: dict[int, str] | None = None) -> None:
        try:
            self.fd = os.open(path, _O_PATH_DIR | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(f"cannot open the container root {path}: {exc.strerror}") from None
        self.path = path
        self.allowed = allowed
        self.mounts = mounts or {}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, path: str, flags: int = os.O_PATH, extra: int = 0) -> int:
        """Open `path` inside the root; raise OSError (ENOENT, ELOOP, EXDEV...) if it cannot."""
        return linux.openat2(self.fd, path.lstrip("/") or ".", flags, _RESOLVE | extra)

    def exists(self, path: str) -> bool:
        try:
            os.close(self.resolve(path))
            return True
        except OSError:
            return False

    def check_mount(self, fd: int, path: str, allowed: set[int] | None = None, target: bool = False) -> None:
        """Refuse `fd` unless it lies on an allowed mount; closes fd when refusing.

        A mount `target` that the runtime or the host made a mount point of (R/run being a
        host tmpfs, root.path "/") writes nothing into that mount: it is accepted when its
        path leads there without following any symlink, since only a symlink is the image's
        doing. Creating inside a directory is never accepted that way.
        """
        allowed = self.allowed if allowed is None else allowed
        if allowed is None:
            return
        mid = linux.mount_id(fd)
        if mid not in allowed and not (target and self._literal(fd, path)):
            os.close(fd)
            where = self.mounts.get(mid, f"mount {mid}")
            raise ForeignMount(f"refusing {path} in the image: it leads onto {where}, not onto the container's "
                               "own root or a tmpfs of the hook (a symlink into a volume?)")

    def _literal(self, fd: int, path: str) -> bool:
        try:
            lfd = self.resolve(path, os.O_PATH, linux.RESOLVE_NO_SYMLINKS)
        except OSError:
            return False
        try:
            a, b = os.fstat(fd), os.fstat(lfd)
            return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and linux.mount_id(fd) == linux.mount_id(lfd)
        finally:
            os.close(lfd)

    def open_dir(self, path: str, create: bool = False, mode: int = 0o755, allowed: set[int] | None = None,
                 target: bool = False) -> int:
        """An O_PATH fd of the directory `path`, made (with parents) when `create` and missing.

        Raises InputError if something other than a directory stands in the way, and
        ForeignMount if the directory or a parent it had to create in is not on an
        allowed mount.
        """
        try:
            fd = self._expect(self.resolve(path), stat.S_IFDIR, path)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not create:
                raise self._refuse(path, exc) from None
        else:
            self.check_mount(fd, path, allowed, target)
            return fd
        parent, name = _split(path)
        pfd = self.open_dir(parent, create=True, mode=mode, allowed=allowed) if parent != "/" else self._root_dir(
            allowed)
        try:
            try:
                os.mkdir(name, mode, dir_fd=pfd)
            except FileExistsError:
                pass  # a dangling symlink or a racing creator: the lookup below decides
            except OSError as exc:
                raise self._refuse(path, exc) from None
            try:
                fd = linux.openat2(pfd, name, os.O_PATH, linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS)
            except OSError as exc:
                raise self._refuse(path, exc) from None
            fd = self._expect(fd, stat.S_IFDIR, path)
            self.check_mount(fd, path, allowed)
            return fd
        finally:
            os.close(pfd)

    def open_file(self, path: str, create: bool = False, allowed: set[int] | None = None,
                  target: bool = False) -> int:
        """An O_PATH fd of the regular file `path`, created empty when `create` and missing.

        A dangling symlink is followed by hand, inside the root: its target is created
        with mknodat in a checked parent, never opened. A FIFO, device, socket or
        directory there is refused, never opened.
        """
        current = "/" + path.strip("/")
        for hop in range(_MAX_LINK_HOPS):
            try:
                fd = self._expect(self.resolve(current), stat.S_IFREG, path)
            except OSError as exc:
                if exc.errno != errno.ENOENT or not create:
                    raise self._refuse(path, exc) from None
            else:
                self.check_mount(fd, current, allowed, target and hop == 0)
                return fd
            parent, name = _split(current)
            pfd = self.open_dir(parent, create=False, allowed=allowed) if parent != "/" else self._root_dir(allowed)
            try:
                try:
                    os.mknod(name, stat.S_IFREG | 0o644, dir_fd=pfd)
                    continue  # made: the lookup above returns it
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise self._refuse(path, exc) from None
                # Something is there yet resolving it found nothing: a dangling symlink.
                try:
                    link = os.readlink(name, dir_fd=pfd)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:  # not a link after all: a racing creator; look again
                        continue
                    raise self._refuse(path, exc) from None
            finally:
                os.close(pfd)
            # Its target, as the kernel would see it: relative to the link's directory, clamped to the root.
            current = link if link.startswith("/") else parent.rstrip("/") + "/" + link
        raise InputError(f"refusing {path} in the image: {os.strerror(errno.ELOOP)}")

    def _root_dir(self, allowed: set[int] | None) -> int:
        fd = os.dup(self.fd)
        self.check_mount(fd, "/", allowed)
        return fd

    def host_path(self, fd: int) -> str:
        """The path the kernel reports for fd (as seen from the current mount namespace)."""
        return os.readlink(f"/proc/self/fd/{fd}")

    @staticmethod
    def _expect(fd: int, kind: int, path: str) -> int:
        mode = os.fstat(fd).st_mode
        if stat.S_IFMT(mode) != kind:
            os.close(fd)
            raise InputError(f"refusing {path} in the image: it is {kind_of(mode)}, expected {kind_of(kind)}")
        return fd

    @staticmethod
    def _refuse(path: str, exc: OSError) -> Exception:
        if isinstance(exc, InputError):
            return exc
        if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR, errno.EEXIST):
            return InputError(f"refusing {path} in the image: {os.strerror(exc.errno)} (symlink loop, "
                              "magic link or a file where a directory belongs)")
        if exc.errno == errno.EROFS:
            return ReadOnlyImage(f"cannot create {path}: the image is read-only and lacks it")
        return InputError(f"cannot resolve {path} in the image: {os.strerror(exc.errno or 0)}")


def _split(path: str) -> tuple[str, str]:
    path = "/" + path.strip("/")
    parent, _, name = path.rpartition("/")
    return parent or "/", name
