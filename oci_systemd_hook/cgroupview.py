"""Which cgroup hierarchy a container sees at /sys/fs/cgroup on a host that is not cgroup v2.

systemd 256 and later refuse cgroup v1 ("Detected unsupported legacy cgroup hierarchy,
refusing execution"), and runc and podman give a container on a v1 or hybrid host
runc's v1 layout (a tmpfs of v1 hierarchies). Every process is in the kernel's one
cgroup2 hierarchy all the same (`0::/path` in /proc/PID/cgroup); a guest that needs it
gets a view of that instead: its own group, writable, as on a v2 host. The host's v1
controllers still apply to it, and the container gets none of them.

* hybrid host (cgroup2 mounted beside the v1 hierarchies, e.g. at /sys/fs/cgroup/unified):
  runc already puts the container in its own cgroup2 group; the hook binds that.
* legacy host (no cgroup2 mounted): the hook makes the container's group itself, on a
  cgroup2 mount of its own that is never attached to the host's tree (apply.py), moves
  the container's init into it, and removes it at poststop.

The guest's systemd version is read from the image (libsystemd-shared-NNN.so, resolved
inside the root, directories listed through an O_PATH descriptor). No `re` here: this
runs on the prestart path.
"""

from __future__ import annotations

import os

from oci_systemd_hook.hostfacts import MountInfo

#: The first systemd that refuses cgroup v1.
FIRST_UNIFIED_ONLY = 256
#: Where distributions put libsystemd-shared (Debian 13 and later: below the multiarch triplet).
#: Where systemd keeps its private libraries (plus /usr/lib/<multiarch triplet>/systemd).
LIB_DIRS = ("/usr/lib/systemd", "/usr/lib64/systemd", "/lib/systemd")
_LIB_PREFIXES = ("libsystemd-shared-", "libsystemd-core-")
#: Names read per directory of the image, at most.
MAX_NAMES = 4096


def host_layout(host_mounts: list[MountInfo]) -> str:
    """"unified" (cgroup2 at /sys/fs/cgroup), "hybrid" (cgroup2 elsewhere too) or "legacy" (none)."""
    top = None
    for m in host_mounts:
        if m.mountpoint == "/sys/fs/cgroup":
            top = m  # the last one is on top
    if top is not None and top.fstype == "cgroup2":
        return "unified"
    return "hybrid" if unified_mount(host_mounts) is not None else "legacy"


def unified_mount(host_mounts: list[MountInfo]) -> MountInfo | None:
    """The host's mount of the whole cgroup2 hierarchy (root "/"), if there is one."""
    for m in host_mounts:
        if m.fstype == "cgroup2" and m.root == "/":
            return m
    return None


def choose(setting: str, layout: str, version: int | None) -> tuple[str, str]:
    """("v1" or "unified", why) for a container on a host of `layout`."""
    if layout == "unified":
        return "unified", "the host is cgroup v2"
    if setting in ("v1", "unified"):
        return setting, f"asked for (cgroup-view={setting})"
    if version is None:
        return "unified", (f"the image's systemd version cannot be read: a cgroup2 view, as systemd "
                           f"{FIRST_UNIFIED_ONLY} and later need")
    if version >= FIRST_UNIFIED_ONLY:
        return "unified", f"the image's systemd {version} refuses cgroup v1"
    return "v1", f"the image's systemd {version} runs on cgroup v1"


def is_multiarch_dir(name: str) -> bool:
    """x86_64-linux-gnu, aarch64-linux-gnu, ...: a directory below /usr/lib that may hold systemd's."""
    return name.count("-") >= 2 and "-linux-" in name


def library_version(name: str) -> int | None:
    """The systemd version in a library's file name (libsystemd-shared-257.9-1~deb13u1.so: 257)."""
    for prefix in _LIB_PREFIXES:
        if name.startswith(prefix) and (name.endswith(".so") or ".so." in name):
            digits = ""
            for ch in name[len(prefix):]:
                if not ch.isdigit() or not ch.isascii():
                    break
                digits += ch
            if digits and len(digits) < 6:
                return int(digits)
    return None


def guest_systemd_version(root: object) -> int | None:
    """The systemd version of the image at `root` (a rootfs.Root), None when it cannot be told."""
    from oci_systemd_hook.rootfs import Root

    assert isinstance(root, Root)

    def names(path: str) -> list[str]:
        try:
            fd = root.resolve(path, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            return []
        found: list[str] = []
        try:  # listed through the resolved descriptor: nothing in the image is opened by name
            with os.scandir(f"/proc/self/fd/{fd}") as entries:
                for entry in entries:
                    found.append(entry.name)
                    if len(found) >= MAX_NAMES:  # a directory of a million names is not read whole
                        break
        except OSError:
            pass
        finally:
            os.close(fd)
        return found

    dirs = list(LIB_DIRS) + [f"/usr/lib/{name}/systemd" for name in names("/usr/lib") if is_multiarch_dir(name)]
    found = [v for d in dirs for v in map(library_version, names(d)) if v is not None]
    return max(found) if found else None
