"""`oci-systemd-hook check ROOTFS`: can this image boot systemd as PID 1 in a container?

It checks the minimum systemd's portable-service documentation asks of an image
(an init, os-release, /etc/machine-id and /etc/resolv.conf, the API directories,
the dynamic loader) and what this hook and systemd need on top of it (a systemd
binary that /sbin/init points to, no enabled unit that is known to fail in a
container).

The image is untrusted and only read, through `imagefs.Image` (resolved inside the
root, nothing but regular files opened). Findings and their severities: `report.py`.
"""

from __future__ import annotations

import os
import re
import stat

from oci_systemd_hook.imagefs import ELF_PREFIX, RUNS_ON, Image, elf_info, is_program, not_a_program, shown
from oci_systemd_hook.report import Report
from oci_systemd_hook.rootfs import Root, kind_of

SYSTEMD_PATHS = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")
INIT_PATH = "/sbin/init"
OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
#: API directories the runtime or the hook mounts over; (path, severity if it is not a directory)
API_DIRS = (("/proc", "error"), ("/sys", "error"), ("/dev", "error"), ("/run", "error"), ("/tmp", "error"),
            ("/var/tmp", "warning"))
LOADER_DIRS = ("/lib64", "/lib", "/usr/lib64", "/usr/lib")
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")

#: Units known to fail (or hang) in a container when enabled and not masked:
#: (units, conditions in the unit that make systemd skip it in a container, why).
RISKY_UNITS: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("systemd-udevd.service", "systemd-udev-trigger.service", "systemd-udev-settle.service"),
     ("ConditionPathIsReadWrite=/sys", "ConditionVirtualization=!container"),
     "udev needs a writable /sys and real devices; a container has neither, so it fails or waits for nothing"),
    (("getty@tty1.service",),
     ("ConditionPathExists=/dev/tty0", "ConditionVirtualization=!container"),
     "a container has no virtual terminals; console-getty.service (on /dev/console) is the container's login"),
    (("systemd-timesyncd.service",),
     ("ConditionCapability=CAP_SYS_TIME", "ConditionVirtualization=!container"),
     "setting the clock needs CAP_SYS_TIME, which containers do not get; the host keeps the time"),
    (("systemd-networkd-wait-online.service",),
     (),
     "waits up to 2 minutes for a network a container may not have (--network none), then fails"),
)

def check_image(rootfs: str) -> Report:
    """Check the image at `rootfs` (a host directory). Raises InputError if it cannot be opened."""
    report = Report(rootfs)
    with Root(rootfs) as root:
        image = Image(root)
        systemd = _check_init(image, report)
        _check_version(image, report, systemd)
        _check_loader(image, report, systemd)
        _check_os_release(image, report)
        _check_machine_id(image, report)
        _check_resolv_conf(image, report)
        _check_dirs(image, report)
        _check_units(image, report)
    return report


def _check_init(image: Image, report: Report) -> str:
    """The systemd binary (its path inside the image, "" if none) and what /sbin/init is."""
    systemd = ""
    systemd_ids: set[tuple[int, int]] = set()
    for path in SYSTEMD_PATHS:
        st = image.stat(path)
        if st is None:
            continue
        if not is_program(st):
            report.add("error", "systemd", f"{path} is {not_a_program(st)}", path)
            continue
        if (st.st_dev, st.st_ino) in systemd_ids:
            continue
        systemd_ids.add((st.st_dev, st.st_ino))
        systemd = systemd or image.inside_path(path)
    if systemd:
        report.add("ok", "systemd", f"systemd binary: {shown(systemd)}", systemd)
    else:
        report.add("error", "systemd", f"no systemd binary ({' or '.join(SYSTEMD_PATHS)}): install systemd "
                   "(Debian/Ubuntu: systemd and systemd-sysv)", SYSTEMD_PATHS[0])

    st = image.stat(INIT_PATH)
    if st is None:
        why = image.lookup_error(INIT_PATH)
        if systemd:
            report.add("info", "init", f"{INIT_PATH} is {why}: start the container with {shown(systemd)} "
                       "as its command (the hook acts on commands named init or systemd)", INIT_PATH)
        else:
            report.add("error", "init", f"{INIT_PATH} is {why} and there is no systemd: nothing to boot", INIT_PATH)
        return systemd
    target = image.inside_path(INIT_PATH)
    arrow = f" -> {shown(target)}" if target != INIT_PATH else ""
    if not is_program(st):
        report.add("error", "init", f"{INIT_PATH}{arrow} is {not_a_program(st)}", INIT_PATH)
        return systemd
    if (st.st_dev, st.st_ino) in systemd_ids:
        report.add("ok", "init", f"{INIT_PATH}{arrow} is systemd", INIT_PATH)
        return systemd
    what = _describe_program(image, target)
    if systemd:
        report.add("warning", "init", f"{INIT_PATH}{arrow} is {what}, not systemd: start the container with "
                   f"{shown(systemd)} as its command to boot systemd", INIT_PATH)
    else:
        report.add("error", "init", f"{INIT_PATH}{arrow} is {what}, not systemd, and the image has no systemd",
                   INIT_PATH)
    return systemd


def _describe_program(image: Image, path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if "busybox" in name:
        return "busybox"
    head = image.read(path, 256) or b""
    if head.startswith(b"#!"):
        interpreter = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        return f"a script ({shown(interpreter, 60)})"
    return f"another program ({shown(name, 60)})"


def _check_version(image: Image, report: Report, systemd: str) -> None:
    if not systemd:
        return
    from oci_systemd_hook.cgroupview import LIB_DIRS, is_multiarch_dir, library_version  # what prestart reads

    dirs = list(LIB_DIRS) + [f"/usr/lib/{n}/systemd" for n in image.listdir("/usr/lib") if is_multiarch_dir(n)]
    found = [(version, f"{d}/{name}") for d in dirs for name in image.listdir(d)
             for version in [library_version(name)] if version is not None]
    if found:
        version, path = max(found)  # of equal versions, libsystemd-shared over libsystemd-core
        report.add("info", "version", f"systemd version {version} (from {shown(path)})", path)
        _check_cgroup_host(report, version)
        return
    report.add("info", "version", "systemd version unknown (no libsystemd-shared-NNN.so found)")


def _check_cgroup_host(report: Report, version: int) -> None:
    """systemd 256 and later refuse a cgroup v1 host: say so when this host is one."""
    from oci_systemd_hook.cgroupview import FIRST_UNIFIED_ONLY, host_layout
    from oci_systemd_hook.hostfacts import parse_mountinfo

    if version < FIRST_UNIFIED_ONLY:
        return
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            layout = host_layout(parse_mountinfo(f.read()))
    except OSError:
        return
    if layout != "unified":
        report.add("warning", "cgroups", f"systemd {version} refuses cgroup v1, and this host is a {layout} cgroup "
                   "v1 host: without the hook (or with --cgroup-view=v1) it will not start; the hook's default "
                   "--cgroup-view=auto gives it a cgroup2 view")


def _check_loader(image: Image, report: Report, systemd: str) -> None:
    info = elf_info(image.read(systemd, ELF_PREFIX) or b"") if systemd else None
    if info is not None:
        arch, interp = info
        host = os.uname().machine
        if host in RUNS_ON and arch not in RUNS_ON[host]:
            report.add("warning", "loader", f"{shown(systemd)} is built for {arch}, this host is {host}: "
                       "it runs only through a binfmt emulator", systemd)
        if not interp:
            report.add("ok", "loader", f"{shown(systemd)} is statically linked", systemd)
            return
        st = image.stat(interp)
        if st is not None and stat.S_ISREG(st.st_mode):
            report.add("ok", "loader", f"dynamic loader {shown(interp)} (merged /usr symlinks followed)", interp)
        else:
            why = image.lookup_error(interp) if st is None else kind_of(st.st_mode)
            report.add("error", "loader", f"systemd needs the dynamic loader {shown(interp)}, which is {why} "
                       "(with a merged /usr, /lib and /lib64 must be symlinks into /usr)", interp)
        return
    for d in LOADER_DIRS:
        for name in image.listdir(d):
            if (name.startswith(("ld-linux", "ld-musl", "ld64.so")) and ".so" in name) or name == "ld.so.1":
                st = image.stat(f"{d}/{name}")
                if st is not None and stat.S_ISREG(st.st_mode):
                    report.add("ok", "loader", f"dynamic loader {shown(d + '/' + name)}", f"{d}/{name}")
                    return
    report.add("warning", "loader", "no dynamic loader (ld-linux*.so*) in /lib or /lib64: only static programs "
               "can run", "/lib64")


def _check_os_release(image: Image, report: Report) -> None:
    for path in OS_RELEASE_PATHS:
        data = image.read(path)
        if data is None:
            continue
        fields: dict[str, str] = {}
        for line in data.decode("utf-8", "replace").splitlines():
            key, eq, value = line.strip().partition("=")
            if eq and key.isidentifier():
                fields[key] = value.strip().strip("\"'")
        name = fields.get("PRETTY_NAME") or fields.get("NAME") or "unnamed OS"
        report.add("ok", "os-release", f"{path}: {shown(name, 80)}", path)
        return
    report.add("warning", "os-release", f"no os-release ({' or '.join(OS_RELEASE_PATHS)} is "
               f"{image.lookup_error(OS_RELEASE_PATHS[1])}): systemd boots but cannot name the OS; "
               "tools that read it fail", OS_RELEASE_PATHS[1])


def _check_machine_id(image: Image, report: Report) -> None:
    path = "/etc/machine-id"
    st = image.stat(path)
    if st is None:
        report.add("warning", "machine-id", f"{path} is {image.lookup_error(path)}: the hook creates it as a "
                   "mount point on a writable image; a read-only image cannot boot", path)
        return
    if not stat.S_ISREG(st.st_mode):
        report.add("error", "machine-id", f"{path} is {kind_of(st.st_mode)}: the hook refuses to mount over it "
                   "(it must be a regular file, empty is fine)", path)
        return
    text = (image.read(path, 4096) or b"").decode("ascii", "replace").strip()
    if text in ("", "uninitialized"):
        report.add("ok", "machine-id", f"{path} is {'empty' if not text else 'uninitialized'}: each container "
                   "gets its own id", path)
    elif len(text) == 32 and all(c in "0123456789abcdef" for c in text) and text != "0" * 32:
        report.add("info", "machine-id", f"{path} holds a fixed machine id: every container from this image "
                   "would share it; this hook mounts a per-container id over it", path)
    else:
        report.add("warning", "machine-id", f"{path} is not a valid machine id (32 lowercase hex digits): "
                   "systemd rejects it unless something (this hook) mounts a valid one over it", path)


def _check_resolv_conf(image: Image, report: Report) -> None:
    path = "/etc/resolv.conf"
    st = image.stat(path)
    if st is None:
        why = image.lookup_error(path)
        if why.startswith("a dangling symlink"):
            report.add("info", "resolv.conf", f"{path} is {why}: the runtime's copy is mounted on it, or a "
                       "resolver inside the container provides it", path)
        else:
            report.add("warning", "resolv.conf", f"{path} is {why}: name resolution depends on the runtime "
                       "creating it (empty is fine)", path)
    elif not stat.S_ISREG(st.st_mode):
        report.add("warning", "resolv.conf", f"{path} is {kind_of(st.st_mode)}, not a regular file: the "
                   "runtime cannot mount the host's over it", path)
    else:
        report.add("ok", "resolv.conf", f"{path} present", path)


def _check_dirs(image: Image, report: Report) -> None:
    missing = []
    for path, severity in API_DIRS:
        st = image.stat(path)
        if st is None:
            why = image.lookup_error(path)
            if why == "missing":
                missing.append(path)
            else:
                report.add(severity, "directories", f"{path} is {why}: it must be a directory", path)
        elif not stat.S_ISDIR(st.st_mode):
            report.add(severity, "directories", f"{path} is {kind_of(st.st_mode)}: the runtime and the hook mount "
                       "over it, it must be a directory", path)
    journal = image.stat("/var/log/journal")
    if journal is not None and not stat.S_ISDIR(journal.st_mode):
        report.add("error", "directories", f"/var/log/journal is {kind_of(journal.st_mode)}: the hook mounts a "
                   "tmpfs there, it must be a directory (or missing)", "/var/log/journal")
    if missing:
        report.add("warning", "directories", f"missing {', '.join(missing)}: created at start on a writable "
                   "image; a read-only image cannot boot", missing[0])
    if not missing and not any(f.check == "directories" for f in report.findings):
        report.add("ok", "directories", " ".join(p for p, _ in API_DIRS) + " are directories")


def _enabled_units(image: Image) -> set[str]:
    """Units some target pulls in (a symlink in a .wants/ or .requires/ directory)."""
    names: set[str] = set()
    seen: set[tuple[int, int]] = set()
    for base in UNIT_DIRS:
        st = image.stat(base)
        if st is None or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        for sub in image.listdir(base):
            if sub.endswith((".wants", ".requires")):
                names.update(image.listdir(f"{base}/{sub}"))
    return names


def _masked(image: Image, unit: str) -> bool:
    for base in ("/etc/systemd/system", "/run/systemd/system"):
        target = image.readlink(f"{base}/{unit}")
        if target == "/dev/null":
            return True
    return False


def _conditions(image: Image, unit: str) -> list[str]:
    for base in UNIT_DIRS:
        data = image.read(f"{base}/{unit}")
        if data is not None:
            return [line.strip().replace(" ", "") for line in data.decode("utf-8", "replace").splitlines()
                    if line.strip().startswith(("Condition", "Assert"))]
    return []


def _check_units(image: Image, report: Report) -> None:
    enabled = _enabled_units(image)
    flagged = False
    for units, guards, why in RISKY_UNITS:
        for unit in units:
            if unit not in enabled:
                continue
            template = re.sub(r"@[^.]+\.", "@.", unit)
            if _masked(image, unit) or _masked(image, template):
                continue
            conditions = _conditions(image, unit) or _conditions(image, template)
            guard = next((c for c in conditions if c in guards), "")
            flagged = True
            if guard:
                report.add("info", "units", f"{unit} is enabled; systemd skips it in a container ({guard})", unit)
            else:
                report.add("warning", "units", f"{unit} is enabled and fails in a container: {why} "
                           f"(mask it: systemctl mask {unit})", unit)
    if not flagged:
        report.add("ok", "units", "no enabled unit known to fail in a container")


def run(rootfs: str, as_json: bool) -> int:
    """The `check` subcommand: print the report, return its exit status."""
    report = check_image(rootfs)
    if as_json:
        import json

        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.render())
    return report.exit_status
