"""Paths inside an untrusted container root, resolved by the kernel inside it.

Every lookup goes through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS):
absolute symlinks and `..` are clamped to the root, /proc magic links are
refused, and what comes back is a descriptor, so nothing can be swapped
between checking and using. Lookups open O_PATH, which never blocks on a FIFO
or opens a device. Creating is limited to what a mount needs: a missing
directory or an empty regular file, made with O_EXCL/mkdirat relative to a
descriptor, never following a symlink in the last component.
"""

from __future__ import annotations

import errno
import os
import stat

from oci_systemd_hook import linux
from oci_systemd_hook.errors import InputError, ReadOnlyImage

_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY
_KIND = {stat.S_IFDIR: "a directory", stat.S_IFREG: "a regular file", stat.S_IFLNK: "a symlink",
         stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket"}


def kind_of(mode: int) -> str:
    return _KIND.get(stat.S_IFMT(mode), "an unknown file type")


class Root:
    """An open directory that every path is resolved inside."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, _O_PATH_DIR | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(f"cannot open the container root {path}: {exc.strerror}") from None
        self.path = path

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

    def open_dir(self, path: str, create: bool = False, mode: int = 0o755) -> int:
        """An O_PATH fd of the directory `path`, made (with parents) when `create` and missing.

        Raises InputError if something other than a directory stands in the way.
        """
        try:
            return self._expect(self.resolve(path), stat.S_IFDIR, path)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not create:
                raise self._refuse(path, exc) from None
        parent, name = _split(path)
        pfd = self.open_dir(parent, create=True, mode=mode) if parent != "/" else os.dup(self.fd)
        try:
            # Reopen the parent as a real directory fd: mkdirat needs one.
            dfd = linux.openat2(pfd, ".", os.O_RDONLY | os.O_DIRECTORY, linux.RESOLVE_NO_SYMLINKS)
            try:
                try:
                    os.mkdir(name, mode, dir_fd=dfd)
                except FileExistsError:
                    pass  # a dangling symlink or a racing creator: the lookup below decides
                except OSError as exc:
                    raise self._refuse(path, exc) from None
                try:
                    fd = linux.openat2(dfd, name, os.O_PATH, linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS)
                except OSError as exc:
                    raise self._refuse(path, exc) from None
                return self._expect(fd, stat.S_IFDIR, path)
            finally:
                os.close(dfd)
        finally:
            os.close(pfd)

    def open_file(self, path: str, create: bool = False) -> int:
        """An O_PATH fd of the regular file `path`, created empty when `create` and missing.

        A FIFO, device, socket or directory there is refused, never opened.
        """
        try:
            return self._expect(self.resolve(path), stat.S_IFREG, path)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not create:
                raise self._refuse(path, exc) from None
        parent, name = _split(path)
        pfd = self.open_dir(parent, create=False)
        try:
            dfd = linux.openat2(pfd, ".", os.O_RDONLY | os.O_DIRECTORY, linux.RESOLVE_NO_SYMLINKS)
            try:
                try:
                    wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  0o644, dir_fd=dfd)
                    os.close(wfd)
                except FileExistsError:
                    # A dangling symlink: let the kernel follow it, clamped inside the root.
                    try:
                        wfd = self.resolve(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY)
                    except OSError as exc:
                        raise self._refuse(path, exc) from None
                    try:
                        if not stat.S_ISREG(os.fstat(wfd).st_mode):
                            raise InputError(f"refusing {path} in the image: it is {kind_of(os.fstat(wfd).st_mode)}")
                    finally:
                        os.close(wfd)
                except OSError as exc:
                    raise self._refuse(path, exc) from None
            finally:
                os.close(dfd)
        finally:
            os.close(pfd)
        try:
            return self._expect(self.resolve(path), stat.S_IFREG, path)
        except OSError as exc:
            raise self._refuse(path, exc) from None

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
