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

from oci_systemd_hook import jsonlite, linux, registry
from oci_systemd_hook.errors import HookError, InputError, ReadOnlyImage
from oci_systemd_hook.hostfacts import MountInfo, below, parse_mountinfo
from oci_systemd_hook.hoststate import RECORD, process_start, write_record
from oci_systemd_hook.log import Log
from oci_systemd_hook.plan import CGROUP2_PRIVATE, CGROUP_DELEGATE_FILES, HostStep, MountStep, Plan, submounts_below
from oci_systemd_hook.rootfs import ForeignMount, Root

#: Test hook: the name of one kernel step to fail (see tests/test_faults.py). Never set in production.
_FAIL_AT = os.environ.get("OCI_SYSTEMD_HOOK_FAIL_AT", "")


def _fault(step: str) -> None:
    if _FAIL_AT and step == _FAIL_AT:
        raise OSError(errno.EIO, f"{step}: injected failure")


class _HostUndo:
    """What prestart created on the host, to remove again if it fails."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []  # (kind, path), in creation order
        self.cgroup2 = -1  # the hook's own detached cgroup2 mount (legacy hosts), -1 if none
        self.moved = 0  # the pid moved into a cgroup2 group of ours
        self.relay = 0  # the notify relay started, ended again on rollback
        self.notify_fd = -1  # its socket, bound at the host step, handed to the relay at the end
        self.mounts: list[int] = []  # tmpfs attached on the host (in the state directory)

    def rollback(self, log: Log) -> None:
        if self.relay:
            try:
                os.kill(self.relay, 15)
            except OSError:
                pass
        for mfd in reversed(self.mounts):
            try:
                linux.detach(mfd)
            except OSError as exc:
                log.warning(f"cleanup: cannot unmount a tmpfs in the state directory: {exc.strerror}")
        for kind, path in reversed(self.created):
            try:
                if kind == "cgroup2":
                    from oci_systemd_hook import cgroup2

                    if self.moved:  # back to the root group, so that the group can go
                        cgroup2.move_process(self.cgroup2, self.moved)
                        self.moved = 0
                    os.rmdir(path, dir_fd=self.cgroup2)
                elif kind == "parent":
                    os.rmdir(path)
                elif kind == "dir":
                    from oci_systemd_hook.removal import remove_tree  # rollback only

                    remove_tree(path)
                elif kind == "claim":
                    state_root, _, mid_cid = path.partition("\0")
                    mid, _, cid = mid_cid.partition("\0")
                    registry.release_mid(state_root, mid, cid)
                elif kind == "journal":
                    journal_root, _, mid_cid = path.partition("\0")
                    mid, _, cid = mid_cid.partition("\0")
                    registry.remove_journal(journal_root, mid, cid)
                    registry.drop_empty_store(journal_root)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if kind != "parent":  # a shared parent that is not empty is someone else's by now
                    log.warning(f"cleanup: cannot remove {path}: {exc.strerror}")


class Record:
    """What prestart leaves in `<state-dir>/record.json`, for poststop and for a rerun.

    It is rewritten at each milestone, so that a prestart killed at any point leaves
    enough behind to undo it: the mount ids that existed before (in the host's and in
    the container's namespace), and at the end the mounts that propagated to the host.
    """

    def __init__(self, plan: Plan, bundle: str, pid: int) -> None:
        self.plan = plan
        self.written = ""
        self.data: dict[str, object] = {
            "id": plan.container_id,
            "bundle": bundle,
            "pid": pid,
            "pid_start": process_start(pid),
            "rootfs": plan.rootfs,
            "machine_id": plan.machine_id,
            "journal_root": plan.journal_root,
            # the machine id whose journal is linked: set before it is claimed (poststop removes a
            # journal only where the registry says it is this container's), cleared if it is not
            "journal": plan.machine_id if any(h.kind == "journal" for h in plan.host_steps) else "",
            "journal_mode": plan.journal_mode,
            "planned": [plan.rootfs.rstrip("/") + m.target for m in plan.mounts if m.kind != "mask"],
            "mounted": [],
            "host_before": [],
            "container_before": [],
            "propagated": [],
            "cgroup2_group": "",  # the container's group on the cgroup2 hierarchy (legacy hosts)
            "cgroup2_created": [],  # the groups prestart made there, parents first
            # tmpfs mounted on the host in the state directory (unix-export), by name: poststop
            # unmounts them before it removes the directory.
            "host_mounts": [os.path.basename(h.path) for h in plan.host_steps if h.kind == "tmpfs"],
            # what prestart makes in the state directory, which poststop removes by name
            "made": _made(plan),
            "complete": False,
        }

    def write(self) -> None:
        """Write the record unless it says nothing new since the last time (each write costs a
        file, a rename and, on some filesystems, a flush)."""
        text = jsonlite.dumps(self.data)
        if text != self.written:
            write_record(self.plan.state_dir, self.data, text)
            self.written = text


def _made(plan: Plan) -> list[str]:
    """The files (then the directories, deepest first, with a trailing "/") that prestart makes
    in the state directory, relative to it; the record itself comes last of the files."""
    files: list[str] = []
    dirs: list[str] = []
    for h in plan.host_steps:
        rel = below(h.path, plan.state_dir)
        if h.kind == "notify":  # the relay's socket and what it records
            from oci_systemd_hook import notifyrelay

            files += [notifyrelay.SOCKET, notifyrelay.RECORD + ".tmp", notifyrelay.RECORD]
        elif not rel:
            continue
        elif h.kind in ("write", "copy"):
            files.append(rel)
        elif h.kind == "mkdir":
            dirs.append(rel + "/")
    dirs.sort(key=lambda d: -d.count("/"))
    return [*files, RECORD + ".tmp", RECORD, *dirs]


def _host_step(step: HostStep, plan: Plan, undo: _HostUndo, log: Log) -> bool:
    """Do one host step; return True if it created something new."""
    created = False
    if step.kind == "claim":
        if registry.claim_mid(plan.state_root, plan.machine_id, plan.container_id):
            undo.created.append(("claim", f"{plan.state_root}\0{plan.machine_id}\0{plan.container_id}"))
        return True
    if step.kind == "journal":
        _fault("mkdir")
        store_existed = os.path.isdir(os.path.join(plan.journal_root, registry.JOURNAL_STORE))
        try:
            created = registry.claim_journal(plan.journal_root, plan.machine_id, plan.container_id, step.mode,
                                             step.uid, step.gid, plan.state_root)
        except BaseException:
            if not store_existed:
                registry.drop_empty_store(plan.journal_root)
            raise
        if created:
            undo.created.append(("journal", f"{plan.journal_root}\0{plan.machine_id}\0{plan.container_id}"))
        if step.label:
            from oci_systemd_hook import labels  # only for a container with a mount label

            labels.set_label(step.path, step.label)
        return created
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
    elif step.kind == "tmpfs":  # a small filesystem of the container's, on the host (unix-export)
        if ("dir", step.path) not in undo.created:  # there before: an earlier run's, killed, may be mounted
            from oci_systemd_hook.cleanup import detach_host_mounts

            parent, name = os.path.split(step.path)
            detach_host_mounts(parent, [name], log)
        _fault("fsmount")
        mfd = linux.new_tmpfs(step.data, ("nosuid", "nodev", "noexec"))
        try:
            dfd = os.open(step.path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                linux.attach(mfd, dfd)
            finally:
                os.close(dfd)
        except BaseException:
            os.close(mfd)
            raise
        undo.mounts.append(mfd)
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
        from oci_systemd_hook import labels

        labels.set_label(step.path, step.label)
    return created


def _cgroup2_group(step: HostStep, pid: int, undo: _HostUndo) -> list[str]:
    """Make the container's cgroup2 group on the hook's own cgroup2 mount and move its init in."""
    from oci_systemd_hook import cgroup2

    _fault("cgroup2")
    undo.cgroup2 = cgroup2.open_hierarchy()
    group, created = cgroup2.make_group(undo.cgroup2, step.path)
    try:
        undo.created.extend(("cgroup2", rel) for rel in created)
        if step.uid is not None:
            assert step.gid is not None
            os.chown(f"/proc/self/fd/{group}", step.uid, step.gid)
            for name in CGROUP_DELEGATE_FILES:
                try:
                    os.chown(name, step.uid, step.gid, dir_fd=group, follow_symlinks=False)
                except FileNotFoundError:
                    pass
        cgroup2.move_process(group, pid)
        undo.moved = pid
    finally:
        os.close(group)
    return created


def _clone_sources(plan: Plan, fds: dict[int, int], cgroup2_fd: int = -1) -> None:
    """Clone every bind source while still in the host's namespace; fds[i] is step i's mount.

    A source `cgroup2:PATH` is PATH on the hook's own cgroup2 mount (legacy hosts)."""
    for i, step in enumerate(plan.mounts):
        if step.kind != "bind":
            continue
        _fault("open_tree")
        if step.source.startswith(CGROUP2_PRIVATE):
            if cgroup2_fd < 0:
                raise HookError("internal: a cgroup2 source without the hook's cgroup2 mount")
            fd = linux.clone_tree(cgroup2_fd, step.source[len(CGROUP2_PRIVATE):])
        else:
            fd = linux.clone_tree(linux.AT_FDCWD, step.source)
        fds[i] = fd
        _fault("mount_setattr")
        linux.set_flags(fd, step.flags, private=True)  # nothing the container mounts there reaches the host


def _mkpath(dirfd: int, rel: str, leaf_is_dir: bool) -> int:
    """Make rel below dirfd (a fresh tmpfs of ours, so no symlinks exist); return an O_PATH fd."""
    parts = [p for p in rel.split("/") if p]
    cur = os.dup(dirfd)
    try:
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if last and not leaf_is_dir:
                try:
                    os.mknod(part, stat.S_IFREG | 0o644, dir_fd=cur)
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


def _live_mounts(pid: int | str = "self") -> list[MountInfo]:
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


class _Where:
    """Which mounts of the container's namespace the hook may create in and mount onto."""

    def __init__(self, plan: Plan, root: Root, live: list[MountInfo]) -> None:
        self.initial = live
        prefix = plan.rootfs.rstrip("/")
        top: dict[str, MountInfo] = {}
        for m in live:
            top[m.mountpoint] = m  # later entries are on top
        self.names = {m.mount_id: f"{m.fstype} mount {m.mountpoint[len(prefix):] or '/'}" for m in live}
        self.on_tmpfs: set[int] = set()  # fresh tmpfs mounts: the hook's, and config.json's own
        for dest in plan.runtime_tmpfs:
            found = top.get(prefix + dest)
            if found is not None and found.fstype == "tmpfs" and found.root == "/":
                self.on_tmpfs.add(found.mount_id)
        self.on_root = {linux.mount_id(root.fd)} | self.on_tmpfs
        self.on_cgroup = {m.mount_id for m in live if m.fstype in ("cgroup", "cgroup2")
                          and below(m.mountpoint, plan.rootfs) is not None}
        # The runtime's own mount at /sys/fs/cgroup (runc's tmpfs of v1 hierarchies): a cgroup2
        # view goes on top of it, and nowhere else.
        cg = top.get(prefix + "/sys/fs/cgroup")
        self.on_cgroup_root = {cg.mount_id} if cg is not None and cg.fstype in ("tmpfs", "cgroup", "cgroup2") \
            else set()
        self.ours: set[int] = set()  # every mount the hook attached

    def add_ours(self, mount_id: int) -> None:
        self.ours.add(mount_id)
        self.on_tmpfs.add(mount_id)
        self.on_root.add(mount_id)
        self.on_cgroup.add(mount_id)

    def allowed(self, step: MountStep) -> set[int]:
        if step.on == "cgroup":
            return self.on_cgroup
        if step.on == "cgroup-root":
            return self.on_cgroup_root
        if step.on == "ours":
            return self.ours
        return self.on_tmpfs if step.on == "tmpfs" else self.on_root


def _mount_tmpfs(root: Root, step: MountStep, where_ok: _Where, attached: list[int], mounted: list[str],
                 log: Log) -> None:
    tfd = root.open_dir(step.target, create=step.create, allowed=where_ok.allowed(step), target=True)
    try:
        where = root.host_path(tfd)
        prefix = root.path.rstrip("/")
        # Runtime mounts below the target (/run/secrets, /run/.containerenv, sockets) would be
        # hidden by the new tmpfs: clone them now and put the copies back on top afterwards.
        keep: list[tuple[str, int, bool]] = []
        try:
            # The mounts there were before the hook began tell whether to look again (the hook's
            # own mounts may have moved some since): usually there are none.
            subs = submounts_below(_live_mounts(), where) if submounts_below(where_ok.initial, where) else []
            for sub in subs:
                rel = sub[len(where):].lstrip("/")
                sfd = root.resolve(sub[len(prefix):], os.O_PATH, linux.RESOLVE_NO_SYMLINKS)
                try:
                    clone = linux.clone_tree(sfd, "", recursive=True)
                finally:
                    os.close(sfd)
                keep.append((rel, clone, stat.S_ISDIR(os.fstat(clone).st_mode)))
            _fault("fsmount")
            mfd = linux.new_tmpfs(step.data, step.flags)
            if step.copy_up:  # the image's content there, into the tmpfs before it hides it
                from oci_systemd_hook.copyup import copy_tree

                try:
                    n = copy_tree(tfd, mfd, step.copy_up, step.target, log)
                except BaseException:
                    os.close(mfd)
                    raise
                if n:
                    log.debug(f"copied up {n} entries of the image's {step.target}")
            _fault("move_mount")
            linux.attach(mfd, tfd)
            attached.append(mfd)
            mounted.append(where)
            where_ok.add_ours(linux.mount_id(mfd))
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
            for rel in step.dirs:
                os.close(_mkpath(mfd, rel, True))
            if step.dirs:
                linux.set_flags(mfd, ("ro",))
        finally:
            for _, clone, _ in keep:
                os.close(clone)
    finally:
        os.close(tfd)


def _mount_bind(root: Root, step: MountStep, src: int, where_ok: _Where, attached: list[int], mounted: list[str],
                log: Log) -> None:
    if step.node == "file":
        tfd = root.open_file(step.target, create=step.create, allowed=where_ok.allowed(step), target=True)
    else:
        tfd = root.open_dir(step.target, create=step.create, allowed=where_ok.allowed(step), target=True)
    try:
        where = root.host_path(tfd)
        _fault("move_mount")
        linux.attach(src, tfd)
        attached.append(src)
        mounted.append(where)
        where_ok.ours.add(linux.mount_id(src))
        if step.on in ("cgroup", "cgroup-root"):  # a cgroup filesystem too: later cgroup steps may mount below it
            where_ok.on_cgroup.add(linux.mount_id(src))
        log.debug(f"bound {step.source} on {step.target} ({','.join(step.flags)})")
    finally:
        os.close(tfd)


def _mask_unit(root: Root, step: MountStep, where_ok: _Where, log: Log) -> None:
    """Create the symlink step.target -> step.source in a tmpfs (ours or the runtime's)."""
    parent, name = os.path.split(step.target)
    # Directories this step creates belong to the container's root, like the tmpfs they are in:
    # with a user namespace, systemd must still be able to write /run/systemd.
    owner = dict(d.split("=", 1) for d in step.data if d.startswith(("uid=", "gid=")))
    allowed = where_ok.allowed(step)
    missing = []
    p = parent
    while p != "/" and not root.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    dfd = root.open_dir(parent, create=True, allowed=allowed)
    try:
        if owner:
            for p in reversed(missing):
                fd = root.open_dir(p, allowed=allowed)
                try:
                    os.chown(f"/proc/self/fd/{fd}", int(owner["uid"]), int(owner["gid"]))
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


def _ids(mounts: list[MountInfo]) -> list[int]:
    return sorted(m.mount_id for m in mounts)


def prestart(plan: Plan, pid: int, log: Log, bundle: str = "",
             seen: tuple[list[MountInfo], list[MountInfo]] | None = None) -> None:
    """Carry out `plan` inside the mount namespace of process `pid`.

    `seen`: the host's and the container's mount tables, read since the last change by the
    hook (while planning), so that they need not be read and parsed again.
    """
    undo = _HostUndo()
    sources: dict[int, int] = {}
    attached: list[int] = []
    mounted: list[str] = []
    record = Record(plan, bundle, pid)
    if seen:  # the mounts before: known already, so that the first record has them
        record.data["host_before"] = _ids(seen[0])
        record.data["container_before"] = _ids(seen[1])
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
                if step.kind == "journal":
                    try:
                        _host_step(step, plan, undo, log)
                    except HookError as exc:  # someone else's by now: the journal stays volatile
                        log.warning(f"not linking the journal: {exc.message}")
                        record.data["journal"] = ""
                        plan.mounts = [m for m in plan.mounts if m.source != step.path]
                        plan.journal_dir = ""
                        record.data["planned"] = [plan.rootfs.rstrip("/") + m.target for m in plan.mounts
                                                  if m.kind != "mask"]
                        continue
                    record.data["journal"] = plan.machine_id
                    continue
                if step.kind == "notify":  # the socket now, the relay on it once the mounts are made
                    from oci_systemd_hook import notifyrelay

                    assert step.uid is not None and step.gid is not None
                    undo.notify_fd = notifyrelay.bind(plan.state_dir, step.uid, step.gid)
                    continue
                if step.kind == "cgroup2-group":
                    record.data["cgroup2_group"] = step.path
                    record.data["cgroup2_created"] = _cgroup2_group(step, pid, undo)
                    continue
                _host_step(step, plan, undo, log)
                if step.path == plan.state_dir:
                    record.write()
            if seen:
                container_mounts = seen[1]
            else:
                container_mounts = _live_mounts(pid)
                record.data["host_before"] = _ids(_live_mounts())
                record.data["container_before"] = _ids(container_mounts)
            record.write()  # what the host steps added (a journal not linked after all, the relay)
            _clone_sources(plan, sources, undo.cgroup2)
            _fault("setns")
            linux.setns(target_ns, linux.CLONE_NEWNS)
            try:
                with Root(plan.rootfs) as root:
                    where_ok = _Where(plan, root, container_mounts)
                    root.mounts = where_ok.names
                    for i, mount in enumerate(plan.mounts):
                        try:
                            if mount.kind == "tmpfs":
                                _mount_tmpfs(root, mount, where_ok, attached, mounted, log)
                            elif mount.kind == "mask":
                                _mask_unit(root, mount, where_ok, log)
                            else:
                                _mount_bind(root, mount, sources.pop(i), where_ok, attached, mounted, log)
                        except (ReadOnlyImage, ForeignMount) as exc:
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
        # With shared propagation our mounts appeared in the host's namespace too: remember
        # exactly which (by mount id), so that poststop unmounts those and nothing else. Only a
        # shared mount in the container's namespace sends anything anywhere.
        if any(m.shared for m in container_mounts):
            before = set(record.data["host_before"])  # type: ignore[call-overload]
            ours = set(mounted)
            record.data["propagated"] = [[m.mount_id, m.mountpoint, m.fstype] for m in _live_mounts()
                                         if m.mount_id not in before and m.mountpoint in ours]
        record.data["mounted"] = mounted
        if undo.notify_fd >= 0:
            from oci_systemd_hook import notifyrelay

            undo.relay = notifyrelay.spawn(plan.state_dir, pid, undo.notify_fd)
            record.data["relay"] = [undo.relay, process_start(undo.relay)]
        record.data["complete"] = True
        record.write()
    except BaseException as exc:
        undo.rollback(log)
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            raise HookError(f"prestart failed: {exc.strerror}{where}") from None
        raise
    finally:
        extra = [fd for fd in (undo.cgroup2, undo.notify_fd) if fd >= 0]
        for fd in list(sources.values()) + attached + undo.mounts + extra:
            try:
                os.close(fd)
            except OSError:
                pass


def undo_partial(record: dict[str, object], pid: int, log: Log) -> None:
    """Unmount in the container what a prestart that was killed half-way had mounted.

    Those are the mounts below the rootfs that were not there before it began (the
    record lists the ids that were). Without this, running prestart again would stack a
    second set of mounts on the first.
    """
    from oci_systemd_hook.cleanup import detach_mounts

    rootfs = record.get("rootfs")
    before = record.get("container_before")
    if not isinstance(rootfs, str) or not isinstance(before, list) or not before:
        return  # killed before it wrote down the container's mounts: it had mounted nothing there yet
    known = set(before)
    target_ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    own_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(target_ns, linux.CLONE_NEWNS)
        try:
            stale = [(m.mount_id, m.mountpoint) for m in _live_mounts()
                     if m.mount_id not in known and below(m.mountpoint, rootfs)]
            for path in detach_mounts(rootfs, stale, log):
                log.info(f"unmounted {path}, left by an interrupted prestart")
        finally:
            linux.setns(own_ns, linux.CLONE_NEWNS)
    finally:
        os.close(target_ns)
        os.close(own_ns)
