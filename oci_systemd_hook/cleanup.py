"""Poststop: undo on the host what prestart did, from the record it left.

Runs in the runtime's namespaces after the container is gone, often with no pid
and an empty environment (podman). It must be idempotent: it may run twice, or
without any prestart, or after a prestart that died half-way.
"""

from __future__ import annotations

import os

from oci_systemd_hook.hostfacts import below, parse_mountinfo
from oci_systemd_hook.hoststate import read_record, remove_tree
from oci_systemd_hook.ids import is_machine_id
from oci_systemd_hook.log import Log


def _strings(record: dict[str, object], key: str) -> list[str]:
    value = record.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def unmount_leftovers(rootfs: str, paths: list[str], log: Log) -> list[str]:
    """Unmount those of `paths` (below rootfs) that are mount points in the hook's namespace.

    They only exist when the container's rootfs propagated mounts back to the
    host (rootfsPropagation shared). Each is looked up from the rootfs without
    following symlinks, so a path the container changed cannot point elsewhere.
    """
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        visible = {m.mountpoint for m in parse_mountinfo(f.read())}
    done: list[str] = []
    candidates = [p for p in sorted(set(paths), key=len, reverse=True) if p in visible and below(p, rootfs)]
    if not candidates:
        return done
    from oci_systemd_hook import linux  # ctypes: only when there is something to unmount

    try:
        rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return done
    try:
        for path in candidates:
            rel = below(path, rootfs)
            assert rel
            try:
                fd = linux.openat2(rootfd, rel, os.O_PATH, linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS)
            except OSError:
                continue
            try:
                linux.umount2(f"/proc/self/fd/{fd}", linux.MNT_DETACH)
                done.append(path)
            except OSError as exc:
                log.warning(f"cannot unmount {path}: {exc.strerror}")
            finally:
                os.close(fd)
    finally:
        os.close(rootfd)
    return done


def poststop(state_dir: str, log: Log, journal_root: str, journal_mode: str, journal_dir: str = "") -> None:
    """Remove this container's state, leftover host mounts and (if asked) its journal.

    `journal_mode`/`journal_dir` are used only when prestart left no record. A
    journal directory is only ever removed when it is `<journal_root>/<machine-id>`.
    """
    record = read_record(state_dir)
    if record is not None:
        rootfs = record.get("rootfs")
        if isinstance(rootfs, str) and rootfs.startswith("/"):
            paths = _strings(record, "mounted") + _strings(record, "planned")
            for path in unmount_leftovers(rootfs, paths, log):
                log.info(f"unmounted {path} that had propagated to the host")
        if record.get("journal_mode") == "remove":  # chosen at prestart, maybe by annotation
            journal_mode = "remove"
        jdir = record.get("journal_dir")
        journal_dir = jdir if isinstance(jdir, str) else ""
    if (journal_mode == "remove" and journal_dir and os.path.dirname(journal_dir) == journal_root
            and is_machine_id(os.path.basename(journal_dir))):
        try:
            remove_tree(journal_dir)
            log.info(f"removed the container's journal {journal_dir}")
        except FileNotFoundError:
            pass
    try:
        remove_tree(state_dir)
        log.debug(f"removed {state_dir}")
    except FileNotFoundError:
        pass
