"""Poststop: undo on the host what prestart did, from the record it left.

Runs in the runtime's namespaces after the container is gone, often with no pid
and an empty environment (podman). It must be idempotent: it may run twice, or
without any prestart, or after a prestart that died half-way.

It unmounts only mounts whose identity (mount id, mount point, type) prestart
recorded as having appeared in the host's namespace because of its own work. A
path alone says nothing: with `root.path: "/"`, or a chroot-style root whose /run
is a host tmpfs, the path of a hook mount is also the path of a host mount.
"""

from __future__ import annotations

import errno
import os

from oci_systemd_hook.hoststate import process_start, read_record
from oci_systemd_hook.log import Log


def _strings(record: dict[str, object], key: str) -> list[str]:
    value = record.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _str(record: dict[str, object], key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def detach_mounts(rootfs: str, mounts: list[tuple[int, str]], log: Log) -> list[str]:
    """Lazily unmount each (mount id, mount point) below `rootfs`, topmost first.

    Each mount point is opened from the rootfs without following symlinks, and is
    unmounted only if the mount found there has the recorded id: a path the
    container changed, or a mount that is someone else's by now, is left alone.
    """
    done: list[str] = []
    if not mounts:
        return []
    from oci_systemd_hook.hostfacts import below

    candidates = [(mid, path) for mid, path in mounts if below(path, rootfs)]
    if not candidates:
        return done
    from oci_systemd_hook import linux  # ctypes: only when there is something to unmount

    try:
        rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return done
    try:
        for mount_id, path in reversed(candidates):
            rel = below(path, rootfs)
            assert rel
            try:
                fd = linux.openat2(rootfd, rel, os.O_PATH, linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS)
            except OSError:
                continue
            try:
                if linux.mount_id(fd) != mount_id:
                    log.debug(f"not unmounting {path}: the mount there is not the recorded one")
                    continue
                linux.umount2(f"/proc/self/fd/{fd}", linux.MNT_DETACH)
                done.append(path)
            except OSError as exc:
                log.warning(f"cannot unmount {path}: {exc.strerror}")
            finally:
                os.close(fd)
    finally:
        os.close(rootfd)
    return done


def _propagated(record: dict[str, object], rootfs: str) -> list[tuple[int, str]]:
    """The host mounts that are the hook's, as the record identifies them (live ones only)."""
    wanted: set[tuple[int, str, str]] = set()
    for entry in record.get("propagated") or []:  # type: ignore[attr-defined]
        if (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)
                and isinstance(entry[1], str) and isinstance(entry[2], str)):
            wanted.add((entry[0], entry[1], entry[2]))
    complete = record.get("complete") is True
    if complete and not wanted:  # the usual case (a private rootfs): nothing reached the host
        return []
    from oci_systemd_hook.hostfacts import below, parse_mountinfo

    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        live = parse_mountinfo(f.read())
    if not complete:
        # Killed before it could write down what propagated: what appeared at the planned
        # mount points (or below them) since it began is the hook's. Nothing else below the
        # rootfs: someone may have mounted there since, and it is not the hook's.
        before = record.get("host_before")
        if isinstance(before, list) and before:
            known = set(before)
            planned = _strings(record, "planned") + _strings(record, "mounted")
            for m in live:
                if m.mount_id in known or not below(m.mountpoint, rootfs):
                    continue
                if any(below(m.mountpoint, p) is not None for p in planned):
                    wanted.add((m.mount_id, m.mountpoint, m.fstype))
    return [(m.mount_id, m.mountpoint) for m in live if (m.mount_id, m.mountpoint, m.fstype) in wanted]


def _remove_cgroup2_groups(own: str, created: list[str], log: Log) -> None:
    """Remove the container's cgroup2 group that prestart made on a legacy host, with what
    systemd made in it, and then the parents prestart created (`created`, parents first) if
    nobody else uses them by now."""
    from oci_systemd_hook import cgroup2

    try:
        top = cgroup2.open_hierarchy()
    except OSError as exc:
        log.warning(f"cannot reach the cgroup2 hierarchy to remove {own[:200]}: {exc.strerror}")
        return
    try:
        for rel in [own] + [p for p in reversed(created) if p != own]:
            if not rel or rel.startswith("/") or ".." in rel.split("/"):
                continue
            try:
                if rel == own:
                    cgroup2.remove_group(top, rel)
                else:
                    os.rmdir(rel, dir_fd=top)
                log.debug(f"removed the cgroup2 group {rel}")
            except OSError as exc:
                if rel == own or exc.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.ENOENT):
                    log.warning(f"cannot remove the cgroup2 group {rel[:200]}: {exc.strerror}")
    finally:
        os.close(top)


def record_is_live(record: dict[str, object]) -> bool:
    """Is the process that prestart prepared still the same, living process?"""
    pid = record.get("pid")
    start = record.get("pid_start")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(start, int):
        return False
    return process_start(pid) == start


def detach_host_mounts(state_dir: str, names: list[str], log: Log) -> None:
    """Unmount the tmpfs prestart mounted at `state_dir`/NAME (unix-export).

    Only a direct child of the container's own state directory is considered: a directory of
    root's that no container can write in, so neither name can be swapped for a symlink (and
    UMOUNT_NOFOLLOW would not follow one). What is mounted exactly there is the hook's, and it
    goes until the directory below shows again (a different device means a mount).
    """
    names = [n for n in names if n and "/" not in n and n not in (".", "..")]
    try:
        base = os.lstat(state_dir).st_dev
    except OSError:
        return
    for name in names:
        path = os.path.join(state_dir, name)
        for _ in range(16):  # mounted twice by a rerun that was killed: each of them
            try:
                if os.lstat(path).st_dev == base:
                    break
            except OSError:
                break
            from oci_systemd_hook import linux  # ctypes: only when there is something to unmount

            try:
                linux.umount2(path, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
                log.debug(f"unmounted {path}")
            except OSError as exc:
                log.warning(f"cannot unmount {path}: {exc.strerror}")
                break


def _remove_made(state_dir: str, made: list[str]) -> bool:
    """Remove the state directory by the names the record lists (files, then directories,
    deepest first). False when that does not empty it: the generic walk takes over.

    The state directory and everything prestart made in it are root's, so these names lead
    nowhere else; the container's unix-export tmpfs is unmounted by then (if it is not, its
    mount point is not empty and the walk, which never crosses into another filesystem,
    leaves it).
    """
    if not made:
        return False
    try:
        dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        for rel in made:
            if rel.startswith("/") or ".." in rel.split("/"):
                return False
            try:
                if rel.endswith("/"):
                    os.rmdir(rel[:-1], dir_fd=dfd)
                else:
                    os.unlink(rel, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except OSError:
                return False
    finally:
        os.close(dfd)
    try:
        os.rmdir(state_dir)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def undo_record(record: dict[str, object], log: Log, state_dir: str = "") -> None:
    """Undo on the host what this record's prestart did there: the mounts that reached the
    host's namespace, the tmpfs it mounted in `state_dir` (the record's directory), and the
    cgroup2 group it made on a legacy host (its container is gone)."""
    if state_dir:
        detach_host_mounts(state_dir, _strings(record, "host_mounts"), log)
    rootfs = _str(record, "rootfs")
    if rootfs.startswith("/"):
        for path in detach_mounts(rootfs, _propagated(record, rootfs), log):
            log.info(f"unmounted {path} that had propagated to the host")
    relay = record.get("relay")
    ints = isinstance(relay, list) and len(relay) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in relay)
    if ints and relay[0] > 1 and process_start(relay[0]) == relay[1]:  # type: ignore[index]  # that very process
        try:
            os.kill(relay[0], 15)  # type: ignore[index]
            log.debug(f"ended the notify relay {relay[0]}")  # type: ignore[index]
        except OSError:
            pass
    own = _str(record, "cgroup2_group")
    if own:
        _remove_cgroup2_groups(own, _strings(record, "cgroup2_created"), log)


def poststop(state_root: str, cid: str, bundle: str, log: Log, journal_mode: str, journal_root: str = "",
             candidates: tuple[str, ...] = (), retention: tuple[int, int] = (0, 0)) -> None:
    """Remove this container's state, the hook's host mounts and (if asked) its journal.

    `bundle` ("" for any) must match the record's: the same id in another runtime is
    another container. `journal_mode`/`candidates` are used only when prestart left no
    record. A journal is only ever removed when the registry says it is `cid`'s.
    `retention` (maximum age in seconds, maximum use in bytes; 0: none) then applies to
    the kept journals of every container that is gone.
    """
    from oci_systemd_hook import registry

    state_dir = os.path.join(state_root, cid)
    record = read_record(state_dir)
    mids: tuple[str, ...] = candidates
    if record is not None:
        theirs = _str(record, "bundle")
        if bundle and theirs and theirs != bundle:
            log.info(f"the state of {cid[:64]} belongs to the bundle {theirs[:200]}, not this one: left alone")
            return
        undo_record(record, log, state_dir)
        if record.get("journal_mode") == "remove":  # chosen at prestart, maybe by annotation
            journal_mode = "remove"
        journal_root = _str(record, "journal_root") or journal_root
        mids = tuple(m for m in (_str(record, "journal"),) if m)
        mid = _str(record, "machine_id")
        if mid:
            registry.release_mid(state_root, mid, cid)

    if journal_mode == "remove" and journal_root:
        for mid in mids:
            if registry.remove_journal(journal_root, mid, cid):
                log.info(f"removed the container's journal {registry.journal_link(journal_root, mid)}")
    if _remove_made(state_dir, _strings(record, "made") if record is not None else []):
        log.debug(f"removed {state_dir}")
    else:
        from oci_systemd_hook.removal import remove_tree

        try:
            remove_tree(state_dir)
            log.debug(f"removed {state_dir}")
        except FileNotFoundError:
            pass
    if journal_root and any(retention):
        import time

        from oci_systemd_hook import retention as policy

        try:
            policy.apply(journal_root, state_root, retention[0], retention[1], time.time(), log)
        except OSError as exc:  # the container is gone either way: a policy hiccup is only a warning
            log.warning(f"journal retention: {exc.strerror or exc}")
