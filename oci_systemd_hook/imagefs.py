"""Reading an untrusted image: every path resolved inside its root, nothing but files opened.

Lookups go through `rootfs.Root` (openat2 RESOLVE_IN_ROOT, O_PATH), so a symlink cannot
lead outside the image; a file is only opened for reading after fstat says it is a
regular file, and then with O_NONBLOCK, so a FIFO or a device planted in the image is
never opened or waited on. Strings taken from the image are shown with control
characters replaced (`shown`).
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from oci_systemd_hook.rootfs import Root, kind_of

MAX_TEXT = 64 << 10  # the largest file read: os-release, machine-id, unit files
ELF_PREFIX = 64 << 10  # bytes of a binary read to find its ELF interpreter

#: ELF e_machine -> architecture name; and which host machines run which.
ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64", 22: "s390x"}
RUNS_ON = {"x86_64": ("x86_64", "i386"), "aarch64": ("aarch64", "arm"), "armv7l": ("arm",),
            "riscv64": ("riscv64",), "ppc64le": ("ppc64",), "ppc64": ("ppc64",), "s390x": ("s390x",),
            "i686": ("i386",)}



def shown(text: str, limit: int = 120) -> str:
    """Text from the image, safe to print: no control characters, bounded length."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


class Image:
    """Read-only lookups inside an image root."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.root_host = os.readlink(f"/proc/self/fd/{root.fd}")

    def stat(self, path: str) -> os.stat_result | None:
        """stat() of `path` resolved inside the root (symlinks followed, clamped), None if it cannot be."""
        try:
            fd = self.root.resolve(path)
        except OSError:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def lookup_error(self, path: str) -> str:
        """Why `path` does not resolve: missing, dangling symlink (with its target), or the kernel's reason."""
        try:
            os.close(self.root.resolve(path))
            return "present"
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return os.strerror(exc.errno or 0).lower()
        parent, _, name = ("/" + path.strip("/")).rpartition("/")
        try:
            pfd = self.root.resolve(parent or "/")
        except OSError:
            return "missing"
        try:
            return f"a dangling symlink to {shown(os.readlink(name, dir_fd=pfd))}"
        except OSError:
            return "missing"
        finally:
            os.close(pfd)

    def inside_path(self, path: str) -> str:
        """Where `path` leads inside the image after following its symlinks (the path itself if unknown)."""
        try:
            fd = self.root.resolve(path)
        except OSError:
            return path
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        base = self.root_host.rstrip("/")
        if real.startswith(base + "/"):
            return real[len(base):]
        return path

    def read(self, path: str, limit: int = MAX_TEXT) -> bytes | None:
        """Up to `limit` bytes of the regular file `path`; None if it is missing or not a regular file."""
        try:
            pfd = self.root.resolve(path)
        except OSError:
            return None
        try:
            first = os.fstat(pfd)
        finally:
            os.close(pfd)
        if not stat.S_ISREG(first.st_mode):
            return None
        try:
            fd = self.root.resolve(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            again = os.fstat(fd)
            if not stat.S_ISREG(again.st_mode) or (again.st_dev, again.st_ino) != (first.st_dev, first.st_ino):
                return None  # swapped while we looked
            return os.pread(fd, limit, 0)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        """Names in the directory `path` (empty if it is missing or not a directory)."""
        try:
            fd = self.root.resolve(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            return sorted(os.listdir(fd))
        except OSError:
            return []
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str | None:
        """The target of `path` if it is a symlink (its parent resolved inside the root)."""
        parent, _, name = ("/" + path.strip("/")).rpartition("/")
        try:
            pfd = self.root.resolve(parent or "/")
        except OSError:
            return None
        try:
            return os.readlink(name, dir_fd=pfd)
        except OSError:
            return None
        finally:
            os.close(pfd)


def is_program(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def not_a_program(st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        return "a regular file without execute permission"
    return f"{kind_of(st.st_mode)}, not a program"


def elf_info(head: bytes) -> tuple[str, str] | None:
    """(architecture, interpreter) of an ELF file from its first bytes; interpreter "" if static."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    bits64 = head[4] == 2
    end = "<" if head[5] == 1 else ">"
    machine = struct.unpack_from(end + "H", head, 18)[0]
    arch = ELF_MACHINES.get(machine, f"machine {machine}")
    if bits64:
        phoff, = struct.unpack_from(end + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
    else:
        phoff, = struct.unpack_from(end + "I", head, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
    for i in range(min(phnum, 256)):
        at = phoff + i * phentsize
        if at + (56 if bits64 else 32) > len(head):
            break
        p_type = struct.unpack_from(end + "I", head, at)[0]
        if p_type != 3:  # PT_INTERP
            continue
        if bits64:
            offset, = struct.unpack_from(end + "Q", head, at + 8)
            size, = struct.unpack_from(end + "Q", head, at + 32)
        else:
            offset, = struct.unpack_from(end + "I", head, at + 4)
            size, = struct.unpack_from(end + "I", head, at + 16)
        raw = head[offset:offset + min(size, 4096)]
        return arch, raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return arch, ""
