"""The kernel layer: carry out a Plan for a live container, or undo it.

Host-side steps run first, in the hook's own mount namespace. Bind sources are
cloned there too (open_tree can only clone mounts of the caller's namespace).
Then the hook enters the container's mount namespace, resolves every target
inside the rootfs, mounts onto the resolved descriptors and returns to its own
namespace. Any failure unmounts what was mounted and removes what was created
on the host, in reverse order, before the error is reported.
"""

from __future__ import annotations

import errno
import os
import stat

from oci_systemd_hook import linux
from oci_systemd_hook.errors import HookError, InputError, ReadOnlyImage
from oci_systemd_hook.hostfacts import parse_mountinfo
from oci_systemd_hook.hoststate import remove_tree, write_record
from oci_systemd_hook.log import Log
from oci_systemd_hook.plan import CGROUP_DELEGATE_FILES, HostStep, MountStep, Plan, submounts_below
from oci_systemd_hook.rootfs import Root

#: Test hook: the name of one kernel step to fail (see tests/test_faults.py). Never set in production.
_FAIL_AT = os.environ.get("OCI_SYSTEMD_HOOK_FAIL_AT", "")


def _fault(step: str) -> None:
    if _FAIL_AT and step == _FAIL_AT:
        raise OSError(errno.EIO, f"{step}: injected failure")


class _HostUndo:
    """What prestart created on the host, to remove again if it fails."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []  # (kind, path), in creation order

    def rollback(self, log: Log) -> None:
        for kind, path in reversed(self.created):
            try:
                if kind == "parent":
                    os.rmdir(path)
                elif kind == "dir":
                    remove_tree(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if kind != "parent":  # a shared parent that is not empty is someone else's by now
                    log.warning(f"cleanup: cannot remove {path}: {exc.strerror}")


def _write_record(plan: Plan, mounted: list[str], journal_created: bool) -> None:
    write_record(plan.state_dir, {
        "id": plan.container_id,
        "rootfs": plan.rootfs,
        "machine_id": plan.machine_id,
        "journal_dir": plan.journal_dir,
        "journal_created": journal_created,
        "journal_mode": plan.journal_mode,
        "planned": [plan.rootfs.rstrip("/") + m.target for m in plan.mounts if m.kind != "mask"],
        "mounted": mounted,
    })


def _host_step(step: HostStep, undo: _HostUndo) -> bool:
    """Do one host step; return True if it created something new."""
    created = False
    if step.kind == "mkdir":
        parent = os.path.dirname(step.path)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755, exist_ok=True)
            undo.created.append(("parent", parent))
        try:
            _fault("mkdir")
            os.mkdir(step.path, step.mode)
            undo.created.append(("dir", step.path))
            created = True
        except FileExistsError:
            st = os.lstat(step.path)
            if not stat.S_ISDIR(st.st_mode):
                raise HookError(f"{step.path} exists and is not a directory") from None
        os.chmod(step.path, step.mode, follow_symlinks=False)
        if step.uid is not None and step.gid is not None:
            os.chown(step.path, step.uid, step.gid, follow_symlinks=False)
    elif step.kind in ("write", "copy"):
        content = step.content.encode()
        if step.kind == "copy":
            with open(step.source, "rb") as src:
                content = src.read(1 << 20)
        _fault("write")
        fd = os.open(step.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        undo.created.append(("file", step.path))
        try:
            os.write(fd, content)
            os.fchmod(fd, step.mode)
        finally:
            os.close(fd)
        created = True
    elif step.kind == "chown-cgroup":
        _fault("chown")
        dfd = os.open(step.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            assert step.uid is not None and step.gid is not None
            os.fchown(dfd, step.uid, step.gid)
            for name in CGROUP_DELEGATE_FILES:
                try:
                    os.chown(name, step.uid, step.gid, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
        finally:
            os.close(dfd)
    if step.label:
        os.setxattr(step.path, "security.selinux", step.label.encode(), follow_symlinks=False)
    return created


def _clone_sources(plan: Plan, fds: dict[int, int]) -> None:
    """Clone every bind source while still in the host's namespace; fds[i] is step i's mount."""
    for i, step in enumerate(plan.mounts):
        if step.kind != "bind":
            continue
        _fault("open_tree")
        fd = linux.clone_tree(linux.AT_FDCWD, step.source)
        fds[i] = fd
        _fault("mount_setattr")
        linux.set_flags(fd, step.flags)


def _mkpath(dirfd: int, rel: str, leaf_is_dir: bool) -> int:
    """Make rel below dirfd (a fresh tmpfs of ours, so no symlinks exist); return an O_PATH fd."""
    parts = [p for p in rel.split("/") if p]
    cur = os.dup(dirfd)
    try:
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if last and not leaf_is_dir:
                try:
                    os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=cur))
                except FileExistsError:
                    pass
            else:
                try:
                    os.mkdir(part, 0o755, dir_fd=cur)
                except FileExistsError:
                    pass
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            os.close(cur)
            cur = nxt
        return os.dup(cur)
    finally:
        os.close(cur)


def _live_mounts() -> list:  # type: ignore[type-arg]
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def _mount_tmpfs(root: Root, step: MountStep, attached: list[int], mounted: list[str], log: Log) -> None:
    tfd = root.open_dir(step.target, create=step.create)
    try:
        where = root.host_path(tfd)
        prefix = root.path.rstrip("/")
        # Runtime mounts below the target (/run/secrets, /run/.containerenv, sockets) would be
        # hidden by the new tmpfs: clone them now and put the copies back on top afterwards.
        keep: list[tuple[str, int, bool]] = []
        try:
            for sub in submounts_below(_live_mounts(), where):
                rel = sub[len(where):].lstrip("/")
                sfd = root.resolve(sub[len(prefix):], os.O_PATH, linux.RESOLVE_NO_SYMLINKS)
                try:
                    clone = linux.clone_tree(sfd, "", recursive=True)
                finally:
                    os.close(sfd)
                keep.append((rel, clone, stat.S_ISDIR(os.fstat(clone).st_mode)))
            _fault("fsmount")
            mfd = linux.new_tmpfs(step.data, step.flags)
            _fault("move_mount")
            linux.attach(mfd, tfd)
            attached.append(mfd)
            mounted.append(where)
            log.debug(f"mounted tmpfs on {step.target} ({','.join(list(step.flags) + step.data)})")
            while keep:
                rel, clone, is_dir = keep.pop(0)
                pfd = _mkpath(mfd, rel, is_dir)
                try:
                    linux.attach(clone, pfd)
                finally:
                    os.close(pfd)
                attached.append(clone)
                mounted.append(os.path.join(where, rel))
                log.debug(f"kept {os.path.join(step.target, rel)} on top of the new tmpfs")
        finally:
            for _, clone, _ in keep:
                os.close(clone)
    finally:
        os.close(tfd)


def _mount_bind(root: Root, step: MountStep, src: int, attached: list[int], mounted: list[str], log: Log) -> None:
    if step.node == "file":
        tfd = root.open_file(step.target, create=step.create)
    else:
        tfd = root.open_dir(step.target, create=step.create)
    try:
        where = root.host_path(tfd)
        _fault("move_mount")
        linux.attach(src, tfd)
        attached.append(src)
        mounted.append(where)
        log.debug(f"bound {step.source} on {step.target} ({','.join(step.flags)})")
    finally:
        os.close(tfd)


def _mask_unit(root: Root, step: MountStep, log: Log) -> None:
    """Create the symlink step.target -> step.source in a tmpfs (ours or the runtime's)."""
    parent, name = os.path.split(step.target)
    # Directories this step creates belong to the container's root, like the tmpfs they are in:
    # with a user namespace, systemd must still be able to write /run/systemd.
    owner = dict(d.split("=", 1) for d in step.data if d.startswith(("uid=", "gid=")))
    missing = []
    p = parent
    while p != "/" and not root.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    dfd = root.open_dir(parent, create=True)
    try:
        if owner:
            for p in reversed(missing):
                fd = root.resolve(p, os.O_RDONLY | os.O_DIRECTORY, linux.RESOLVE_NO_SYMLINKS)
                try:
                    os.fchown(fd, int(owner["uid"]), int(owner["gid"]))
                finally:
                    os.close(fd)
        _fault("symlink")
        try:
            os.symlink(step.source, name, dir_fd=dfd)
        except FileExistsError:
            pass  # the image or an earlier run already decided about this unit
        else:
            if owner:
                os.chown(name, int(owner["uid"]), int(owner["gid"]), dir_fd=dfd, follow_symlinks=False)
        log.debug(f"masked {step.target}")
    finally:
        os.close(dfd)


def _same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def prestart(plan: Plan, pid: int, log: Log) -> None:
    """Carry out `plan` inside the mount namespace of process `pid`."""
    undo = _HostUndo()
    sources: dict[int, int] = {}
    attached: list[int] = []
    mounted: list[str] = []
    journal_created = False
    try:
        ns_path = f"/proc/{pid}/ns/mnt"
        try:
            target_ns = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InputError(f"process {pid} does not exist (the container is gone?)") from None
        own_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _same_file(target_ns, own_ns):
                raise InputError(f"process {pid} shares the hook's mount namespace: refusing to mount over the host")
            for step in plan.host_steps:
                created = _host_step(step, undo)
                if step.path == plan.journal_dir:
                    journal_created = created
                if step.path == plan.state_dir:
                    _write_record(plan, mounted, journal_created)
            _write_record(plan, mounted, journal_created)
            _clone_sources(plan, sources)
            _fault("setns")
            linux.setns(target_ns, linux.CLONE_NEWNS)
            try:
                with Root(plan.rootfs) as root:
                    for i, mount in enumerate(plan.mounts):
                        try:
                            if mount.kind == "tmpfs":
                                _mount_tmpfs(root, mount, attached, mounted, log)
                            elif mount.kind == "mask":
                                _mask_unit(root, mount, log)
                            else:
                                _mount_bind(root, mount, sources.pop(i), attached, mounted, log)
                        except ReadOnlyImage as exc:
                            if not mount.optional:
                                raise
                            log.warning(f"skipping {mount.target}: {exc.message}")
            except BaseException:
                for mfd in reversed(attached):
                    try:
                        linux.detach(mfd)
                    except OSError as exc:
                        log.warning(f"cleanup: cannot unmount: {exc.strerror}")
                raise
            finally:
                linux.setns(own_ns, linux.CLONE_NEWNS)
        finally:
            os.close(target_ns)
            os.close(own_ns)
        _write_record(plan, mounted, journal_created)
    except BaseException as exc:
        undo.rollback(log)
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            raise HookError(f"prestart failed: {exc.strerror}{where}") from None
        raise
    finally:
        for fd in list(sources.values()) + attached:
            try:
                os.close(fd)
            except OSError:
                pass
